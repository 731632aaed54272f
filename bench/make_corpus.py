#!/usr/bin/env python3
"""Writes bench/corpus/*.yml: 60 workflows in twelve real-world shapes, five
variants each (languages, sizes, filters), so the benchmark parses a corpus
that looks like what repositories hold. Deterministic: rerun to regenerate."""
import os
import random

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
LANGS = [
    ("rust", "cargo build --locked", "cargo test --workspace", "Cargo.lock", "~/.cargo/registry"),
    ("node", "npm ci && npm run build", "npm test -- --ci", "package-lock.json", "~/.npm"),
    ("python", "pip install -e .[dev]", "pytest -q -k 'not slow'", "requirements.txt", "~/.cache/pip"),
    ("go", "go build ./...", "go test -race ./...", "go.sum", "~/go/pkg/mod"),
    ("java", "mvn -B -DskipTests package", "mvn -B verify", "pom.xml", "~/.m2/repository"),
]


def ci(lang, i):
    name, build, test, lock, cache = lang
    oses = ["ubuntu-latest", "windows-latest", "macos-latest"][: 1 + i % 3]
    versions = [str(v) for v in range(10 + i, 14 + i)]
    return f"""name: {name} CI {i}
on:
  push:
    branches: [main, "release/**"]
    paths-ignore: ["**.md", "docs/**"]
  pull_request:
    branches: [main]
    types: [opened, synchronize, reopened, ready_for_review]
concurrency:
  group: ${{{{ github.workflow }}}}-${{{{ github.event.pull_request.number || github.ref }}}}
  cancel-in-progress: ${{{{ github.event_name == 'pull_request' }}}}
permissions:
  contents: read
env:
  CI: true
  TOOL: {name}
jobs:
  lint:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Lint
        run: echo lint {name} ${{{{ github.sha }}}}
  test:
    needs: lint
    if: ${{{{ !contains(github.event.head_commit.message, '[skip tests]') }}}}
    runs-on: ${{{{ matrix.os }}}}
    timeout-minutes: {20 + i}
    strategy:
      fail-fast: {str(i % 2 == 0).lower()}
      max-parallel: {2 + i}
      matrix:
        os: [{", ".join(oses)}]
        version: [{", ".join(versions)}]
        exclude:
          - os: {oses[-1]}
            version: {versions[0]}
        include:
          - os: ubuntu-latest
            version: {versions[-1]}
            coverage: true
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - uses: actions/cache@v4
        with:
          path: {cache}
          key: ${{{{ runner.os }}}}-{name}-${{{{ matrix.version }}}}-${{{{ hashFiles('**/{lock}') }}}}
          restore-keys: |
            ${{{{ runner.os }}}}-{name}-${{{{ matrix.version }}}}-
      - name: Build ({name} ${{{{ matrix.version }}}})
        run: {build}
      - name: Test
        run: {test}
        env:
          VERSION: ${{{{ matrix.version }}}}
          COVERAGE: ${{{{ matrix.coverage && 'on' || 'off' }}}}
      - name: Upload coverage
        if: ${{{{ matrix.coverage }}}}
        uses: actions/upload-artifact@v4
        with:
          name: coverage-${{{{ matrix.os }}}}
          path: coverage/
"""


def release(lang, i):
    name, build, _, _, _ = lang
    return f"""name: Release {name} {i}
on:
  push:
    tags: ["v[0-9]+.[0-9]+.[0-9]+", "!v*-rc*"]
  workflow_dispatch:
    inputs:
      version:
        description: Version to release
        required: true
        type: string
      prerelease:
        type: boolean
        default: false
      channel:
        type: choice
        options: [stable, beta, nightly]
        default: stable
permissions:
  contents: write
  id-token: write
jobs:
  build:
    strategy:
      matrix:
        target: [x86_64-linux, aarch64-linux, x86_64-darwin, aarch64-darwin, x86_64-windows]
    runs-on: ${{{{ contains(matrix.target, 'darwin') && 'macos-latest' || contains(matrix.target, 'windows') && 'windows-latest' || 'ubuntu-latest' }}}}
    outputs:
      digest: ${{{{ steps.hash.outputs.digest }}}}
    steps:
      - uses: actions/checkout@v4
      - run: {build}
      - id: hash
        shell: bash
        run: |
          echo "digest=$(sha256sum dist/* | base64 -w0)" >> "$GITHUB_OUTPUT"
      - uses: actions/upload-artifact@v4
        with:
          name: dist-${{{{ matrix.target }}}}
          path: dist/
  publish:
    needs: build
    runs-on: ubuntu-latest
    environment:
      name: ${{{{ inputs.channel || 'stable' }}}}
      url: https://example.invalid/releases/${{{{ inputs.version || github.ref_name }}}}
    steps:
      - uses: actions/download-artifact@v4
        with:
          pattern: dist-*
          merge-multiple: true
      - name: Publish {i}
        env:
          TOKEN: ${{{{ secrets.RELEASE_TOKEN }}}}
          PRERELEASE: ${{{{ inputs.prerelease }}}}
        run: |
          echo "publishing ${{{{ format('{{0}}-{{1}}', github.repository, inputs.version) }}}}"
          echo "digest ${{{{ needs.build.outputs.digest }}}}"
"""


def reusable(lang, i):
    name, build, test, _, _ = lang
    return f"""name: Reusable {name} build {i}
on:
  workflow_call:
    inputs:
      working-directory:
        type: string
        default: .
      run-tests:
        type: boolean
        default: true
      retries:
        type: number
        default: {i + 1}
    outputs:
      artifact:
        description: Name of the uploaded artifact
        value: ${{{{ jobs.build.outputs.artifact }}}}
    secrets:
      registry-token:
        required: false
jobs:
  build:
    runs-on: ubuntu-latest
    defaults:
      run:
        working-directory: ${{{{ inputs.working-directory }}}}
    outputs:
      artifact: ${{{{ steps.name.outputs.artifact }}}}
    steps:
      - uses: actions/checkout@v4
      - run: {build}
      - if: ${{{{ inputs.run-tests }}}}
        run: {test}
      - id: name
        run: echo "artifact={name}-${{{{ github.run_id }}}}-${{{{ inputs.retries }}}}" >> "$GITHUB_OUTPUT"
"""


def caller(lang, i):
    name = lang[0]
    return f"""name: Call {name} {i}
on:
  push:
    branches: [main]
  pull_request:
jobs:
  build:
    uses: ./.github/workflows/reusable-{name}-{i}.yml
    with:
      working-directory: packages/{name}
      run-tests: ${{{{ github.event_name == 'pull_request' }}}}
    secrets: inherit
  remote:
    uses: octo-org/shared-workflows/.github/workflows/{name}.yml@v{i + 1}
    with:
      retries: {i}
    secrets:
      registry-token: ${{{{ secrets.REGISTRY_TOKEN }}}}
  report:
    needs: [build, remote]
    if: always()
    runs-on: ubuntu-latest
    steps:
      - run: echo "artifact ${{{{ needs.build.outputs.artifact }}}} result ${{{{ needs.build.result }}}}"
"""


def many_jobs(lang, i):
    rnd = random.Random(i)
    n = 20 + i * 5
    jobs = []
    for j in range(n):
        needs = sorted({f"job{rnd.randrange(j)}" for _ in range(rnd.randrange(3))}) if j else []
        needs_line = f"    needs: [{', '.join(needs)}]\n" if needs else ""
        jobs.append(
            f"""  job{j}:
{needs_line}    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: make part-{j} TOOL={lang[0]} SHA=${{{{ github.sha }}}}
      - run: echo done-{j} ${{{{ job.status }}}}
"""
        )
    return f"name: Monorepo {lang[0]} {i}\non:\n  push:\n  pull_request:\njobs:\n" + "".join(jobs)


def dynamic_matrix(lang, i):
    return f"""name: Dynamic matrix {lang[0]} {i}
on:
  pull_request:
    paths: ["packages/**", "!packages/**/README.md"]
jobs:
  changes:
    runs-on: ubuntu-latest
    outputs:
      packages: ${{{{ steps.detect.outputs.packages }}}}
      any: ${{{{ steps.detect.outputs.any }}}}
    steps:
      - uses: actions/checkout@v4
      - id: detect
        run: |
          list=$(git diff --name-only origin/${{{{ github.base_ref }}}} | cut -d/ -f2 | sort -u | jq -R . | jq -sc .)
          echo "packages=$list" >> "$GITHUB_OUTPUT"
          echo "any=$([ "$list" != "[]" ] && echo true || echo false)" >> "$GITHUB_OUTPUT"
  test:
    needs: changes
    if: needs.changes.outputs.any == 'true'
    runs-on: ubuntu-latest
    strategy:
      fail-fast: false
      matrix:
        package: ${{{{ fromJSON(needs.changes.outputs.packages) }}}}
        shard: [{", ".join(str(s) for s in range(1, 3 + i))}]
    steps:
      - uses: actions/checkout@v4
      - run: ./ci/test.sh ${{{{ matrix.package }}}} --shard ${{{{ matrix.shard }}}}/{2 + i}
"""


def services(lang, i):
    return f"""name: Integration {lang[0]} {i}
on:
  push:
    branches: ["**"]
    tags-ignore: ["**"]
jobs:
  integration:
    runs-on: ubuntu-latest
    container:
      image: {lang[0]}:latest
      env:
        DATABASE_URL: postgres://postgres:postgres@db:5432/app
      options: --cpus 2
    services:
      db:
        image: postgres:{13 + i}
        env:
          POSTGRES_PASSWORD: postgres
        ports: ["5432:5432"]
        options: >-
          --health-cmd pg_isready
          --health-interval 10s
          --health-timeout 5s
          --health-retries 5
      cache:
        image: redis:7
        ports: ["6379:6379"]
    steps:
      - uses: actions/checkout@v4
      - run: {lang[1]}
      - run: {lang[2]}
        env:
          REDIS_URL: redis://cache:6379
"""


def scheduled(lang, i):
    return f"""name: Nightly {lang[0]} {i}
on:
  schedule:
    - cron: "{i * 7 % 60} {i + 1} * * *"
    - cron: "0 */6 * * 1-5"
  workflow_dispatch:
permissions: read-all
jobs:
  audit:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo audit {lang[0]}
      - name: Open issue on failure
        if: failure() && github.event_name == 'schedule'
        uses: actions/github-script@v7
        with:
          script: |
            await github.rest.issues.create({{owner: context.repo.owner, repo: context.repo.repo, title: 'Nightly failed'}})
  stale:
    runs-on: ubuntu-latest
    permissions:
      issues: write
      pull-requests: write
    steps:
      - uses: actions/stale@v9
        with:
          days-before-stale: {30 + i}
          stale-issue-label: stale
"""


def long_scripts(lang, i):
    lines = "\n".join(
        f"          echo \"step {k}: ${{{{ github.repository }}}} ${{{{ env.TOOL }}}} ${{{{ matrix.part }}}}\" && test {k} -ge 0"
        for k in range(25 + i * 5)
    )
    steps = "\n".join(
        f"""      - name: Phase {k} of ${{{{ matrix.part }}}}
        if: ${{{{ success() && (matrix.part != 'docs' || {k} < 3) }}}}
        env:
          PHASE: {k}
          LABEL: ${{{{ format('{{0}}-{{1}}-{{2}}', env.TOOL, matrix.part, {k}) }}}}
        run: |
{lines if k == 0 else '          echo phase ' + str(k)}"""
        for k in range(8 + i)
    )
    return f"""name: Scripts {lang[0]} {i}
on: [push, pull_request]
env:
  TOOL: {lang[0]}
jobs:
  scripts:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        part: [core, cli, docs, web]
    steps:
{steps}
"""


def deploy(lang, i):
    envs = ["dev", "staging", "production"]
    jobs = []
    prev = "build"
    for env in envs:
        jobs.append(
            f"""  deploy-{env}:
    needs: {prev}
    if: github.ref == 'refs/heads/main' || startsWith(github.ref, 'refs/tags/')
    runs-on: ubuntu-latest
    environment:
      name: {env}
      url: ${{{{ steps.deploy.outputs.url }}}}
    concurrency:
      group: deploy-{env}
      cancel-in-progress: false
    steps:
      - id: deploy
        run: ./deploy.sh {env} ${{{{ needs.build.outputs.image }}}}
        env:
          KUBECONFIG_DATA: ${{{{ secrets.KUBECONFIG }}}}
      - run: curl -fsS ${{{{ steps.deploy.outputs.url }}}}/health
"""
        )
        prev = f"deploy-{env}"
    return f"""name: Deploy {lang[0]} {i}
on:
  push:
    branches: [main]
    tags: ["v*"]
jobs:
  build:
    runs-on: ubuntu-latest
    outputs:
      image: ${{{{ steps.image.outputs.ref }}}}
    steps:
      - uses: actions/checkout@v4
      - id: image
        run: echo "ref=registry.invalid/{lang[0]}:${{{{ github.sha }}}}" >> "$GITHUB_OUTPUT"
""" + "".join(jobs)


def pr_automation(lang, i):
    return f"""name: PR automation {lang[0]} {i}
on:
  pull_request_target:
    types: [opened, labeled, unlabeled, synchronize]
  issue_comment:
    types: [created]
permissions:
  pull-requests: write
  issues: write
jobs:
  label:
    if: github.event_name == 'pull_request_target'
    runs-on: ubuntu-latest
    steps:
      - uses: actions/labeler@v5
        with:
          repo-token: ${{{{ secrets.GITHUB_TOKEN }}}}
  command:
    if: >-
      github.event_name == 'issue_comment' &&
      github.event.issue.pull_request &&
      startsWith(github.event.comment.body, '/rerun')
    runs-on: ubuntu-latest
    steps:
      - run: echo "rerun for ${{{{ github.event.comment.user.login }}}} on ${{{{ join(github.event.issue.labels.*.name, ', ') }}}}"
  size:
    if: ${{{{ contains(github.event.pull_request.labels.*.name, 'size/{i}') }}}}
    runs-on: ubuntu-latest
    steps:
      - run: echo ${{{{ toJSON(github.event.pull_request.labels) }}}}
"""


def docs(lang, i):
    return f"""name: Docs {lang[0]} {i}
on:
  push:
    branches: [main]
    paths: ["docs/**", "mkdocs.yml", "**.md"]
  workflow_dispatch:
permissions:
  contents: read
  pages: write
  id-token: write
concurrency:
  group: pages
  cancel-in-progress: false
defaults:
  run:
    shell: bash
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.{10 + i % 3}"
      - run: pip install mkdocs-material && mkdocs build --strict
      - uses: actions/upload-pages-artifact@v3
        with:
          path: site
  deploy:
    needs: build
    runs-on: ubuntu-latest
    environment:
      name: github-pages
      url: ${{{{ steps.deployment.outputs.page_url }}}}
    steps:
      - id: deployment
        uses: actions/deploy-pages@v4
"""


FAMILIES = [ci, release, reusable, caller, many_jobs, dynamic_matrix, services, scheduled, long_scripts, deploy, pr_automation, docs]

os.makedirs(OUT, exist_ok=True)
for family in FAMILIES:
    for i, lang in enumerate(LANGS):
        prefix = "reusable" if family is reusable else family.__name__.replace("_", "-")
        path = os.path.join(OUT, f"{prefix}-{lang[0]}-{i}.yml")
        with open(path, "w") as f:
            f.write(family(lang, i))
print(f"wrote {len(FAMILIES) * len(LANGS)} files to {OUT}")
