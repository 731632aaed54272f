// Times GitHub's TypeScript workflow parser and expression engine on the same
// inputs as firerunner's Rust benchmark, and prints one JSON object.
//
//   node bench.mjs CORPUS_DIR EXPRESSIONS_JSON ITERATIONS
//
// EXPRESSIONS_JSON holds {"contexts": {...}, "expressions": ["...", ...]}.
import { readFileSync, readdirSync } from "node:fs";
import { register } from "node:module";
import { join } from "node:path";

register("./json-hook.mjs", import.meta.url);
const { parseWorkflow, convertWorkflowTemplate, NoOperationTraceWriter } = await import("@actions/workflow-parser");
const { Lexer, Parser, Evaluator, data } = await import("@actions/expressions");

const [corpusDir, expressionsPath, iterationsArg] = process.argv.slice(2);
const iterations = Number(iterationsArg ?? 10);
const trace = new NoOperationTraceWriter();

const files = readdirSync(corpusDir)
  .filter((f) => f.endsWith(".yml"))
  .sort()
  .map((name) => ({ name, content: readFileSync(join(corpusDir, name), "utf8") }));
const { contexts, expressions } = JSON.parse(readFileSync(expressionsPath, "utf8"));
const contextData = JSON.parse(JSON.stringify(contexts), data.reviver);
const contextNames = Object.keys(contexts);

async function parseCorpus() {
  let errors = [];
  for (const file of files) {
    const parsed = parseWorkflow(file, trace);
    if (parsed.value) {
      await convertWorkflowTemplate(parsed.context, parsed.value);
    }
    for (const e of parsed.context.errors.getErrors()) errors.push(`${file.name}: ${e.message}`);
  }
  return errors;
}

// Lexes, parses and evaluates every expression, keeping each result (or
// undefined for an error), as the Rust side keeps its values.
function evaluateAll() {
  const results = new Array(expressions.length);
  for (let i = 0; i < expressions.length; i++) {
    try {
      const lexed = new Lexer(expressions[i]).lex();
      const ast = new Parser(lexed.tokens, contextNames, []).parse();
      results[i] = new Evaluator(ast, contextData).evaluate();
    } catch (e) {
      results[i] = undefined;
    }
  }
  return results;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function time(fn) {
  const samples = [];
  await fn();
  for (let i = 0; i < iterations; i++) {
    const start = process.hrtime.bigint();
    await fn();
    samples.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return median(samples);
}

const errors = await parseCorpus();
const results = evaluateAll().map((v) => (v === undefined ? "error" : JSON.stringify(v, data.replacer)));
const workflowMs = await time(parseCorpus);
const expressionMs = await time(evaluateAll);
console.log(JSON.stringify({
  files: files.length,
  workflow_errors: errors,
  workflow_ms: workflowMs,
  expressions: expressions.length,
  expression_ms: expressionMs,
  results,
}));
