//! Writes the man pages and shell completions of every program, generated
//! from the clap definitions the programs parse with (`tstat_transport::args`),
//! so they can never drift from `--help` (design §13.2).
//!
//! Usage: `cargo run --example gen-docs -- OUTDIR` writes
//! `OUTDIR/man/PROG.1.gz` and `OUTDIR/completions/{bash/PROG, zsh/_PROG,
//! fish/PROG.fish}`; `scripts/package.sh` runs it before `cargo deb`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: gen-docs OUTDIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&out)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-docs: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man_dir = out.join("man");
    fs::create_dir_all(&man_dir)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        fs::create_dir_all(out.join("completions").join(shell.to_string()))?;
    }
    for cmd in tstat_transport::cli::args::commands() {
        let name = cmd.get_name().to_string();
        // Compressed as Debian policy wants (gzip -9n: best, no name or time).
        let path = man_dir.join(format!("{name}.1.gz"));
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(fs::File::create(&path)?, flate2::Compression::best());
        gz.write_all(&man_page(&cmd)?)?;
        gz.finish()?.sync_all()?;
        written.push(path);
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let file = match shell {
                Shell::Zsh => format!("_{name}"),
                Shell::Fish => format!("{name}.fish"),
                _ => name.clone(),
            };
            let path = out.join("completions").join(shell.to_string()).join(file);
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut text);
            fs::write(&path, text)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// The man page: clap_mangen's sections, with the examples and exit
/// statuses (the `after_help` text) kept verbatim, not refilled by roff.
fn man_page(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let notes = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|t| t.to_string());
    let man = clap_mangen::Man::new(
        cmd.clone()
            .after_help(None::<&str>)
            .after_long_help(None::<&str>),
    );
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    if let Some(notes) = notes {
        page.extend_from_slice(b".SH NOTES\n.nf\n");
        for line in notes.lines() {
            // roff: backslashes are escapes; a leading . or ' is a request.
            let line = line.replace('\\', "\\e");
            if line.starts_with(['.', '\'']) {
                page.extend_from_slice(b"\\&");
            }
            page.extend_from_slice(line.as_bytes());
            page.push(b'\n');
        }
        page.extend_from_slice(b".fi\n");
    }
    man.render_version_section(&mut page)?;
    Ok(page)
}
