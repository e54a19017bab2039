//! `brain events export` and `brain events import`: the log as NDJSON, out and back in
//! (the format and the import's checks are `store::transfer`'s). An export cut off midway goes
//! on with `--from-position` one past its last line; a full export (no filter) imports into an
//! empty store, or onto a store whose head it continues.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use time::OffsetDateTime;

use super::cli::{FAILED_EXIT, PROGRESS_EVERY};
use super::store::transfer::{self, Selection, Trailer};
use super::{db, store};

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// PostgreSQL database holding the event store.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = crate::config::DATABASE_URL_DEFAULT)]
    database_url: String,
    /// Write to this file instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// First position to export (1 when absent).
    #[arg(long, default_value_t = 1)]
    from_position: u64,
    /// Last position to export (the head when the export starts, when absent).
    #[arg(long)]
    to_position: Option<u64>,
    /// Only events of these stream types (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    stream_type: Vec<String>,
    /// Only events recorded at or after this moment (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    since: Option<OffsetDateTime>,
    /// Only events recorded before this moment (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    until: Option<OffsetDateTime>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// PostgreSQL database holding the event store (created and migrated if needed).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = crate::config::DATABASE_URL_DEFAULT)]
    database_url: String,
    /// Read this file instead of stdin.
    input: Option<PathBuf>,
    /// Print what was imported as JSON.
    #[arg(long)]
    json: bool,
}

fn rfc3339(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|error| format!("not an RFC 3339 time: {error}"))
}

/// Exports the selected events, then the trailer; answers the exit status.
pub async fn export(args: ExportArgs) -> anyhow::Result<i32> {
    let pool = super::cli::connect(&args.database_url).await?;
    let head = store::head(&pool).await?;
    let up_to = args.to_position.unwrap_or(head).min(head);
    let mut selection = Selection {
        after: args.from_position.saturating_sub(1),
        up_to,
        stream_types: args.stream_type,
        since: args.since,
        until: args.until,
    };
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::fs::File::create(path)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let started = Instant::now();
    let mut last_shown = started;
    let (mut count, mut last) = (0u64, None);
    while selection.after < selection.up_to {
        let (events, reached) = transfer::read_page(&pool, &selection).await?;
        for event in &events {
            serde_json::to_writer(&mut out, event)?;
            out.write_all(b"\n")?;
        }
        count += events.len() as u64;
        if let Some(event) = events.last() {
            last = Some((event.global_position, event.chain_hash.clone()));
        }
        selection.after = reached;
        if last_shown.elapsed() >= PROGRESS_EVERY {
            last_shown = Instant::now();
            let rate = count as f64 / started.elapsed().as_secs_f64();
            eprint!(
                "\rexport: position {reached} of {up_to}, {count} events, {rate:.0} events/s   "
            );
        }
    }
    let trailer = Trailer {
        count,
        last_position: last.as_ref().map(|(position, _)| *position),
        last_hash: last.map(|(_, hash)| hash),
    };
    serde_json::to_writer(&mut out, &serde_json::json!({ "trailer": trailer }))?;
    out.write_all(b"\n")?;
    out.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "\rexport: {count} events through position {up_to} in {seconds:.1} s ({:.0} events/s)",
        count as f64 / seconds.max(1e-9)
    );
    Ok(0)
}

/// Imports a file (or stdin); answers the exit status: 0 imported, 1 the file was refused
/// (nothing written), 2 could not run.
pub async fn import(args: ImportArgs) -> anyhow::Result<i32> {
    let pool = db::connect(&args.database_url, 2).await?;
    db::migrate(&pool).await?;
    let input: Box<dyn BufRead + Send> = match &args.input {
        Some(path) => Box::new(BufReader::with_capacity(1 << 20, std::fs::File::open(path)?)),
        None => Box::new(BufReader::with_capacity(1 << 20, std::io::stdin())),
    };
    let started = Instant::now();
    let mut last_shown = started;
    let progress = |written: u64| {
        if last_shown.elapsed() >= PROGRESS_EVERY {
            last_shown = Instant::now();
            let rate = written as f64 / started.elapsed().as_secs_f64();
            eprint!("\rimport: {written} events checked and written, {rate:.0} events/s   ");
        }
    };
    match transfer::import(&pool, input, progress).await {
        Ok(imported) => {
            // The read models are built from the imported log next: with the planner's
            // statistics of it at once, rather than at autovacuum's next round (without them a
            // filtered read sorts its whole range, several times slower).
            if let Err(error) = sqlx::query("ANALYZE events").execute(&pool).await {
                eprintln!("\rbrain events import: imported, but ANALYZE events failed: {error}");
            }
            let seconds = started.elapsed().as_secs_f64();
            if args.json {
                println!("{}", serde_json::to_string(&imported)?);
            } else {
                println!(
                    "imported {} events through position {} in {seconds:.1} s; head {}:{}",
                    imported.events,
                    imported.last_position,
                    imported.last_position,
                    imported.last_hash
                );
            }
            Ok(0)
        }
        Err(
            error @ (transfer::ImportError::Io(_)
            | transfer::ImportError::Store(_)
            | transfer::ImportError::Database(_)),
        ) => {
            eprintln!("\rbrain events import: could not run: {error}");
            Ok(FAILED_EXIT)
        }
        Err(refused) => {
            eprintln!("\rbrain events import: refused, nothing written: {refused}");
            Ok(super::cli::FINDINGS_EXIT)
        }
    }
}
