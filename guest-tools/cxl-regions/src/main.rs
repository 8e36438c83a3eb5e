//! `cxl-regions --plan JSON`: runs in the lab guest, prints an outcome JSON.

use anyhow::Context;
use clap::Parser;

/// Creates CXL regions and dax devices for the devices of a plan.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The plan, as JSON (see cxl_regions::plan::Plan).
    #[arg(long)]
    plan: String,
    /// Root of sysfs.
    #[arg(long, default_value = "/sys")]
    sysfs: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan: cxl_regions::plan::Plan =
        serde_json::from_str(&args.plan).context("parsing --plan")?;
    let outcome = cxl_regions::setup::run(&plan, &cxl_regions::sysfs::Sysfs::new(&args.sysfs))
        .context("setting up CXL regions")?;
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}
