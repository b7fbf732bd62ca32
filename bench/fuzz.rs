//! Million-case property fuzzing: the targets of tests/props (the same strategies and
//! properties the test suite runs a few thousand cases of), each for its share of
//! `--cases`, reporting cases, failures with the minimal failing input, and time.
//!
//!   cargo run --release --example fuzz -- --cases 1000000
//!   cargo run --release --example fuzz -- --cases 20000 --only upload_
//!
//! A new target is one entry in `TARGETS` (tests/props/mod.rs); nothing here changes.
//! Exit status 1 when any target failed.

#[path = "../tests/props/mod.rs"]
mod props;

use std::time::Instant;

struct Args {
    cases: u64,
    only: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        cases: 1_000_000,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--cases" => {
                let v = it.next().ok_or("--cases needs a number")?;
                out.cases = v
                    .replace('_', "")
                    .parse()
                    .map_err(|_| format!("--cases {v:?} is not a number"))?;
            }
            "--only" => out.only = Some(it.next().ok_or("--only needs a name prefix")?),
            "-h" | "--help" => {
                return Err(
                    "usage: fuzz [--cases N (total, default 1000000)] [--only PREFIX]".into(),
                )
            }
            other => return Err(format!("unknown argument {other:?}; see --help")),
        }
    }
    Ok(out)
}

fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let targets: Vec<&props::Target> = props::TARGETS
        .iter()
        .filter(|t| args.only.as_deref().is_none_or(|p| t.name.starts_with(p)))
        .collect();
    if targets.is_empty() {
        eprintln!("no target matches {:?}", args.only);
        std::process::exit(2);
    }
    // Panics inside a case are failures the runner shrinks; their messages would
    // flood the output while it does, so they are kept quiet and reported once.
    std::panic::set_hook(Box::new(|_| {}));

    let weights: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
    println!(
        "{:<30} {:>10} {:>9} {:>11}  result",
        "target", "cases", "secs", "cases/s"
    );
    let started = Instant::now();
    let mut total = 0u64;
    let mut failures = Vec::new();
    for t in &targets {
        let cases = (args.cases * u64::from(t.weight)).div_ceil(weights);
        let cases = u32::try_from(cases).unwrap_or(u32::MAX);
        let t0 = Instant::now();
        let outcome = (t.run)(cases);
        let secs = t0.elapsed().as_secs_f64();
        total += u64::from(cases);
        let result = match &outcome {
            Ok(()) => "ok".to_string(),
            Err(_) => "FAILED".to_string(),
        };
        println!(
            "{:<30} {:>10} {:>9.1} {:>11.0}  {result}",
            t.name,
            cases,
            secs,
            f64::from(cases) / secs
        );
        if let Err(e) = outcome {
            failures.push((t.name, e));
        }
    }
    println!(
        "{:<30} {:>10} {:>9.1}  {} failed",
        "total",
        total,
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    for (name, e) in &failures {
        println!("\n--- {name} ---\n{e}");
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
