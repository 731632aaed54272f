//! `firerunner image build`: build (or find in the cache) a guest image.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use firerunner_vm::image::{self, BuildProgress, ImageRecipe};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `firerunner image`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(clap::Subcommand)]
enum ImageCommand {
    /// Build a guest image, or print the cached one built from the same recipe.
    Build(BuildArgs),
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Which image: `debian` (the default job image) or `test` (busybox, fast).
    #[arg(long, default_value = "debian")]
    kind: String,
    /// The static guest agent (default: $FIRERUNNER_AGENT, else the one
    /// scripts/build-agent.sh writes, else `firerunner-agent` beside this program).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Image cache (default: $FIRERUNNER_CACHE_DIR or ~/.cache/firerunner).
    #[arg(long)]
    cache: Option<PathBuf>,
}

/// Runs `firerunner image ...`.
pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        ImageCommand::Build(args) => build(args),
    }
}

fn build(args: BuildArgs) -> Result<ExitCode> {
    let agent = match args.agent {
        Some(agent) => agent,
        None => find_agent()?,
    };
    let cache = args.cache.unwrap_or_else(image::default_cache_dir);
    let recipe = recipe_for(&args.kind, agent)?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {prefix} {msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let (_, dir) = image::build(&recipe, &cache, &mut |progress| match progress {
        BuildProgress::Stage { stage, of, what } => {
            bar.set_prefix(format!("[{stage}/{of}]"));
            bar.set_message(what);
        }
        BuildProgress::Output(line) => bar.set_message(line.chars().take(100).collect::<String>()),
        BuildProgress::Cached(dir) => bar.set_message(format!("cached: {}", dir.display())),
        BuildProgress::Done(dir) => bar.set_message(format!("built: {}", dir.display())),
    })
    .context("building the guest image")?;
    bar.finish_and_clear();
    println!("{}", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// The recipe of an image kind named on the command line.
pub fn recipe_for(kind: &str, agent: PathBuf) -> Result<ImageRecipe> {
    match kind {
        "debian" => Ok(ImageRecipe::debian(agent)),
        "test" => Ok(ImageRecipe::test(agent)),
        other => anyhow::bail!("unknown image kind '{other}': use debian or test"),
    }
}

/// The agent binary when `--agent` is not given.
pub fn find_agent() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("FIRERUNNER_AGENT") {
        return Ok(path.into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let mut candidates = vec![target.join("x86_64-unknown-linux-gnu/release/firerunner-agent")];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("firerunner-agent"));
            candidates.push(dir.join("../x86_64-unknown-linux-gnu/release/firerunner-agent"));
        }
    }
    candidates.into_iter().find(|path| image::is_static_binary(path)).context(
        "no static guest agent found: build it with scripts/build-agent.sh, or pass --agent PATH",
    )
}

/// The VM spec for `--image debian|test|DIR` (built images are cached), with
/// no network and a two-minute boot limit.
pub async fn guest_spec(
    image_arg: &str,
    memory_mib: u32,
    vcpus: u8,
) -> Result<firerunner_vm::VmSpec> {
    let image = if image_arg == "test" || image_arg == "debian" {
        let recipe = recipe_for(image_arg, find_agent()?)?;
        let (image, _) = tokio::task::spawn_blocking(move || {
            image::build(&recipe, &image::default_cache_dir(), &mut |_| {})
        })
        .await??;
        image
    } else {
        image::GuestImage::load(std::path::Path::new(image_arg))?
    };
    Ok(firerunner_vm::VmSpec {
        image,
        vcpus,
        memory_mib,
        network: firerunner_vm::Network::None,
        boot_timeout: Duration::from_secs(120),
    })
}
