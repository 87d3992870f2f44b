//! `modbus-synth`: write a deterministic synthetic Modbus/TCP capture (what
//! `cargo xtask gen-pcap` runs), for benchmarks, tests and demos.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use modbus_synth::{generate, SynthConfig};

/// Write a deterministic synthetic Modbus/TCP capture (classic pcap).
#[derive(Debug, Parser)]
#[command(name = "modbus-synth", version)]
struct Args {
    /// Frames to write.
    #[arg(long, default_value_t = 1_000_000)]
    frames: u64,
    /// Where to write the capture.
    #[arg(long)]
    out: PathBuf,
    /// PRNG seed: the same seed and flags give the same bytes.
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    seed: u64,
    /// Inject the attacks (rogue master, unauthorized write, enumeration, flood, malformed MBAP).
    #[arg(long)]
    attacks: bool,
    /// Up to this many pipelined request ADUs in one segment, sometimes.
    #[arg(long, default_value_t = 1)]
    adus_per_segment: u8,
    /// Sometimes split an ADU over two segments.
    #[arg(long)]
    split_adus: bool,
    #[arg(long, default_value_t = SynthConfig::default().masters)]
    masters: u16,
    #[arg(long, default_value_t = SynthConfig::default().slaves)]
    slaves: u16,
    /// Also write every frame's label (`frame;label`, 1 for a frame that
    /// completes an attack request) to FILE, for `modbus-detect eval`.
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
}

/// `frame;label` for every frame of the capture.
fn write_labels(path: &std::path::Path, frames: u64, attacks: &[u64]) -> std::io::Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "frame;label")?;
    let mut next = attacks.iter().peekable();
    for f in 1..=frames {
        let mut attack = false;
        while next.next_if(|&&a| a <= f).is_some() {
            attack = true;
        }
        writeln!(w, "{f};{}", u8::from(attack))?;
    }
    w.flush()
}

fn main() -> ExitCode {
    let a = Args::parse();
    let cfg = SynthConfig {
        frames: a.frames,
        seed: a.seed,
        attacks: a.attacks,
        adus_per_segment: a.adus_per_segment.max(1),
        split_adus: a.split_adus,
        masters: a.masters,
        slaves: a.slaves,
        ..SynthConfig::default()
    };
    let written =
        std::fs::File::create(&a.out).and_then(|f| generate(&cfg, std::io::BufWriter::new(f)));
    match written {
        Ok(s) => {
            if let Some(path) = &a.labels {
                if let Err(e) = write_labels(path, s.frames, &s.attack_frames) {
                    eprintln!("modbus-synth: error: {}: {e}", path.display());
                    return ExitCode::from(4);
                }
            }
            println!("{}", serde_json::to_string(&s).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("modbus-synth: error: {}: {e}", a.out.display());
            ExitCode::from(4)
        }
    }
}
