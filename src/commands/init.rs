//! `strata init`: create a repository with its first password.
use super::{Context, Outcome};
use anyhow::{Result, bail};
use strata::repo::config::{ChunkerParams, Config};
use strata::repo::key::KdfParams;
use strata::repo::repository::Repository;

#[derive(clap::Args)]
pub struct Args {
    /// zstd level for new blobs, 0 to store uncompressed
    #[arg(long, default_value_t = Config::DEFAULT_COMPRESSION)]
    compression: i32,
    /// Target pack size in MiB
    #[arg(long, default_value_t = 16)]
    pack_size_mib: u32,
    /// Average chunk size in KiB for MongoDB collections (cut only between documents);
    /// smaller stores less after scattered changes of small documents, at more chunks
    #[arg(long, default_value_t = ChunkerParams::BSON_AVERAGE_KIB)]
    bson_chunk_kib: u32,
    /// Argon2id memory in MiB for the key file
    #[arg(long, default_value_t = KdfParams::DEFAULT_MEMORY_KIB / 1024)]
    kdf_memory_mib: u32,
    /// Argon2id iterations for the key file
    #[arg(long, default_value_t = KdfParams::DEFAULT_ITERATIONS)]
    kdf_iterations: u32,
    /// Never train or use zstd dictionaries for small files (by default backups train them
    /// from the repository's own small files, which then take far less space)
    #[arg(long)]
    no_dictionaries: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let backend = ctx.backend()?;
    let password = ctx.password("enter password for new repository: ")?;
    if password.is_empty() {
        bail!("an empty password is not allowed");
    }
    let mut config = Config::new(
        ChunkerParams::FILES,
        args.pack_size_mib.saturating_mul(1 << 20),
        args.compression,
    );
    config.bson_chunker =
        ChunkerParams::bson_with_average(args.bson_chunk_kib.saturating_mul(1024));
    config.dictionaries = !args.no_dictionaries;
    if let Err(e) = config.bson_chunker.validate() {
        bail!("invalid --bson-chunk-kib {}: {e}", args.bson_chunk_kib);
    }
    let kdf = KdfParams::new(
        args.kdf_memory_mib.saturating_mul(1024),
        args.kdf_iterations,
    );
    let repo = Repository::init(backend.clone(), password.as_bytes(), config, kdf)?;
    let id = repo.config().id.to_hex();
    if ctx.args.json {
        ctx.print_json(&serde_json::json!({"id": id, "repository": backend.location()}))?;
    }
    ctx.say(&format!(
        "created repository {} at {}",
        &id[..8],
        backend.location()
    ))?;
    Ok(Outcome::Ok)
}
