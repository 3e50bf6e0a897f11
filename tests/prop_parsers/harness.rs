//! One small function per parser of repository bytes, shared by the property tests
//! (`tests/prop_parsers.rs`) and the cargo-fuzz targets (`fuzz/`): each takes bytes as a
//! storage attacker could write them, runs the parser (encrypting them with a real key first
//! where the parser sits behind the AEAD, so that they reach it) and says whether it accepted
//! them. Also each parser's valid encoding and the mutations applied to it.
use std::sync::OnceLock;
use strata::repo::blob::{self, BlobType, EncoderDict, seal, seal_with};
use strata::repo::config::{ChunkerParams, Config};
use strata::repo::crypto::{MasterKey, ObjectKind};
use strata::repo::dictionary::{self, Dictionary, Loaded};
use strata::repo::id::{BlobId, Id, PackId, SnapshotId, TreeId};
use strata::repo::indexfile::{self, PackEntries};
use strata::repo::key::{KdfParams, KeyFile};
use strata::repo::lock::{self, LockInfo, LockMode};
use strata::repo::pack::BlobEntry;
use strata::repo::pack::{self, PackBuilder, PackFormat, TRAILER_LEN};
use strata::repo::snapshot::{BsonTime, Snapshot, Source, Summary};
use strata::repo::tree::{self, ChunkRef, Node, NodeKind, Timespec, Tree, Xattr};
use strata::write::chunker::Chunker;
use strata::write::trainer::{self, Samples};

/// One parser: its name, its harness and the valid encoding mutations start from.
pub struct Parser {
    pub name: &'static str,
    pub parse: fn(&[u8]) -> bool,
    pub sample: fn() -> Vec<u8>,
}

pub const PARSERS: &[Parser] = &[
    Parser {
        name: "pack_trailer",
        parse: pack_trailer,
        sample: pack_file_sample,
    },
    Parser {
        name: "pack_entries",
        parse: pack_entries,
        sample: pack_entries_sample,
    },
    Parser {
        name: "pack_header",
        parse: pack_header,
        sample: pack_header_sample,
    },
    Parser {
        name: "pack_file",
        parse: pack_file,
        sample: pack_file_sample,
    },
    Parser {
        name: "index_file",
        parse: index_file,
        sample: index_file_sample,
    },
    Parser {
        name: "tree",
        parse: tree,
        sample: tree_sample,
    },
    Parser {
        name: "snapshot",
        parse: snapshot,
        sample: snapshot_sample,
    },
    Parser {
        name: "config",
        parse: config,
        sample: config_sample,
    },
    Parser {
        name: "key_file",
        parse: key_file,
        sample: key_file_sample,
    },
    Parser {
        name: "master_key",
        parse: master_key,
        sample: master_key_sample,
    },
    Parser {
        name: "lock",
        parse: lock,
        sample: lock_sample,
    },
    Parser {
        name: "dictionary",
        parse: dictionary,
        sample: dictionary_sample,
    },
];

pub fn parser(name: &str) -> &'static Parser {
    PARSERS
        .iter()
        .find(|p| p.name == name)
        .expect("a parser of that name")
}

/// The repository key every harness uses: fixed, so that fuzz runs replay.
pub fn key() -> MasterKey {
    MasterKey::from_encryption_key([7; 32])
}

/// The format version the harnesses' repository has.
const VERSION: u32 = 3;

/// How the harnesses seal a plaintext object of `kind` (bound to `binding`).
fn seal_object(kind: ObjectKind, binding: &[u8], plain: &[u8]) -> Vec<u8> {
    let key = key();
    key.encrypt(&key.aad(kind, binding), plain)
}

fn unseal_object(kind: ObjectKind, sealed: &[u8]) -> Vec<u8> {
    let key = key();
    key.decrypt(&key.aad(kind, b""), sealed)
        .expect("the harness sealed it")
}

/// Bytes of blob data in front of the pack header built by [`pack_header`].
const PACK_DATA_LEN: usize = 4096;

pub fn pack_trailer(b: &[u8]) -> bool {
    pack::header_length(b, VERSION).is_ok()
}

pub fn pack_entries(b: &[u8]) -> bool {
    [PackFormat::Legacy, PackFormat::V3]
        .into_iter()
        .any(|format| pack::decode_entries(format, b).is_ok())
}

/// `plain` as the decrypted header of a pack holding `PACK_DATA_LEN` bytes of blobs.
pub fn pack_header(plain: &[u8]) -> bool {
    let mut pack = vec![0u8; PACK_DATA_LEN];
    let header = seal_object(ObjectKind::PackHeader, b"", plain);
    pack.extend_from_slice(&header);
    pack.extend_from_slice(&(header.len() as u32).to_le_bytes());
    pack.extend_from_slice(b"SPK3");
    pack::read_header(&key(), VERSION, &pack).is_ok()
}

/// A whole pack file as stored (blobs, encrypted header, trailer).
pub fn pack_file(b: &[u8]) -> bool {
    pack::read_header(&key(), VERSION, b).is_ok()
}

/// `plain` as the decrypted content of an index file.
pub fn index_file(plain: &[u8]) -> bool {
    let sealed = seal_object(ObjectKind::Index, b"", plain);
    indexfile::decode(&key(), VERSION, &sealed).is_ok()
}

/// A tree blob's plaintext, and then what every walker asks of its nodes.
pub fn tree(b: &[u8]) -> bool {
    let Ok(tree) = Tree::decode(b) else {
        return false;
    };
    for node in &tree.nodes {
        let offsets = tree::chunk_offsets(node.content());
        let _ = tree::chunk_at(&offsets, node.size);
        let _ = (node.subtree(), node.type_name(), tree.find(&node.name));
    }
    true
}

/// A snapshot's plaintext JSON, and then what listing and retention ask of it.
pub fn snapshot(b: &[u8]) -> bool {
    let Ok(s) = serde_json::from_slice::<Snapshot>(b) else {
        return false;
    };
    let _ = (
        s.same_origin(&s.host, &s.paths),
        s.is_oplog_slice(),
        s.mongodb(),
    );
    let _ = (s.time.to_rfc3339(), s.has_tag("x"));
    true
}

/// A config's plaintext JSON and its validation; parameters that pass must chunk without
/// panicking.
pub fn config(b: &[u8]) -> bool {
    let Ok(c) = serde_json::from_slice::<Config>(b) else {
        return false;
    };
    if c.validate().is_err() {
        return false;
    }
    let gear = key().chunker_seed();
    for p in [c.chunker, c.bson_chunker] {
        let input = vec![0x5a; 8192];
        for chunk in Chunker::new(&input[..], p, &gear) {
            chunk.expect("reading from memory");
        }
    }
    true
}

/// Key-file costs the harness lets `open` pay: `open` refuses parameters beyond its bounds
/// (issue 12, finding 5), but those bounds still allow seconds per attempt.
fn cheap_kdf(kdf: &KdfParams) -> bool {
    kdf.memory_kib <= 1024 && kdf.iterations <= 2 && kdf.parallelism <= 4
}

/// A key file as stored (plain JSON), checked against the master key and opened.
pub fn key_file(b: &[u8]) -> bool {
    let Ok(file) = KeyFile::parse(b) else {
        return false;
    };
    let _ = file.verify(&key());
    cheap_kdf(&file.kdf) && file.open(KEY_PASSWORD).is_ok()
}

/// The master key as decrypted from a key file's `data`.
pub fn master_key(b: &[u8]) -> bool {
    serde_json::from_slice::<MasterKey>(b).is_ok()
}

/// `plain` as the decrypted content of a lock object, then what lock checks ask of it.
pub fn lock(plain: &[u8]) -> bool {
    let sealed = seal_object(ObjectKind::Lock, LOCK_NAME.as_bytes(), plain);
    let Ok(info) = lock::decode(&key(), LOCK_NAME, &sealed) else {
        return false;
    };
    let _ = info.describe();
    true
}

/// `plain` as the decrypted content of a dictionary object (stored under the name its
/// content hashes to), then what readers do with it: digest it and decompress a blob.
pub fn dictionary(plain: &[u8]) -> bool {
    let key = key();
    let name = dictionary::name_of(&key, plain);
    let sealed = key.encrypt(&dictionary::aad(&name), plain);
    let Ok(loaded) = Loaded::from_stored(&key, name, &sealed) else {
        return false;
    };
    let (entry, stored) = dictionary_blob();
    let _ = blob::open(
        &key,
        PackFormat::V3,
        entry,
        stored,
        Some(Ok(&loaded.decoder)),
    );
    true
}

/// The plaintext every dictionary-compressed blob of the harness holds.
const DICT_BLOB: &[u8] =
    b"<html><head><title>page 7</title></head><body>entry 7 of the manual</body></html>";

/// The sample dictionary, trained on small pages.
fn sample_dict() -> &'static Dictionary {
    static DICT: OnceLock<Dictionary> = OnceLock::new();
    DICT.get_or_init(|| {
        let mut samples = Samples::default();
        for i in 0..400u32 {
            let page = format!(
                "<html><head><title>page {i}</title></head><body>entry {} of the manual</body></html>",
                i.wrapping_mul(7919)
            );
            samples.push(BlobId(Id::hash_of(page.as_bytes())), page.as_bytes());
        }
        trainer::evaluate(&samples, 3, None).expect("pages gain from a dictionary")
    })
}

/// A blob compressed with the sample dictionary: its entry and stored bytes.
fn dictionary_blob() -> &'static (BlobEntry, Vec<u8>) {
    static BLOB: OnceLock<(BlobEntry, Vec<u8>)> = OnceLock::new();
    BLOB.get_or_init(|| {
        let key = key();
        let enc = EncoderDict::new(1, &sample_dict().bytes, 3).expect("a trained dictionary");
        let id = key.blob_id(DICT_BLOB);
        let s = seal_with(
            &key,
            PackFormat::V3,
            BlobType::Data,
            id,
            DICT_BLOB,
            3,
            Some(&enc),
        );
        let entry = BlobEntry {
            ty: s.ty,
            id,
            offset: 0,
            length: s.bytes.len() as u32,
            raw_length: s.raw_len,
            compression: s.compression,
        };
        (entry, s.bytes)
    })
}

pub fn dictionary_sample() -> Vec<u8> {
    sample_dict().encode()
}

/// The name the harness's lock object is stored (and bound) under.
const LOCK_NAME: &str = "00";

const KEY_PASSWORD: &[u8] = b"fuzz";

fn blob_id(n: u8) -> BlobId {
    BlobId(Id::hash_of(&[n]))
}

fn pack_sample() -> &'static pack::FinishedPack {
    static PACK: OnceLock<pack::FinishedPack> = OnceLock::new();
    PACK.get_or_init(|| {
        let key = key();
        let mut b = PackBuilder::new(PackFormat::V3);
        for (i, plain) in [&b"one"[..], &[9u8; 300][..], b""].into_iter().enumerate() {
            let ty = [BlobType::Data, BlobType::Tree][i % 2];
            b.add(seal(&key, PackFormat::V3, ty, key.blob_id(plain), plain, 3));
        }
        b.finish(&key)
    })
}

pub fn pack_file_sample() -> Vec<u8> {
    pack_sample().bytes.clone()
}

/// The decrypted header of the sample pack, its blobs moved to fit `PACK_DATA_LEN`.
pub fn pack_header_sample() -> Vec<u8> {
    let bytes = &pack_sample().bytes;
    let (_, hlen) = pack::header_length(bytes, VERSION).expect("a valid pack");
    let end = bytes.len() - TRAILER_LEN;
    let plain = unseal_object(ObjectKind::PackHeader, &bytes[end - hlen as usize..end]);
    assert!(
        pack_sample()
            .listing
            .blobs
            .iter()
            .all(|e| (e.offset + e.length) as usize <= PACK_DATA_LEN)
    );
    plain
}

pub fn pack_entries_sample() -> Vec<u8> {
    let mut out = Vec::new();
    pack::encode_entries(PackFormat::V3, &pack_sample().listing.blobs, &mut out);
    out
}

pub fn index_file_sample() -> Vec<u8> {
    let packs = [
        pack_sample().listing.clone(),
        PackEntries {
            pack: PackId(Id::hash_of(b"empty")),
            format: PackFormat::Legacy,
            length: None,
            blobs: vec![],
        },
    ];
    unseal_object(
        ObjectKind::Index,
        &indexfile::encode(&key(), VERSION, &packs),
    )
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o4755,
        uid: 1000,
        gid: 100,
        user: "user".into(),
        group: "users".into(),
        mtime: Timespec {
            sec: -5,
            nsec: 999_999_999,
        },
        ctime: Timespec {
            sec: 1_700_000_000,
            nsec: 0,
        },
        inode: 42,
        device: 7,
        links: 2,
        size: 70_000,
        xattrs: vec![Xattr {
            name: b"user.x".to_vec(),
            value: vec![0, 255],
        }],
    }
}

pub fn tree_sample() -> Vec<u8> {
    let content = vec![
        ChunkRef {
            id: blob_id(1),
            len: 65_536,
        },
        ChunkRef {
            id: blob_id(2),
            len: 4464,
        },
    ];
    Tree::new(vec![
        node(b"file", NodeKind::File { content }),
        node(
            b"dir",
            NodeKind::Dir {
                subtree: TreeId(blob_id(3).0),
            },
        ),
        node(
            b"\xfflink",
            NodeKind::Symlink {
                target: b"../x".to_vec(),
            },
        ),
        node(b"dev", NodeKind::BlockDev { rdev: 0x0801 }),
        node(b"fifo", NodeKind::Fifo),
    ])
    .encode()
}

pub fn snapshot_sample() -> Vec<u8> {
    let t = BsonTime {
        t: 1_700_000_000,
        i: 3,
    };
    let s = Snapshot {
        time: "2026-01-02T03:04:05.123456789Z".parse().expect("a time"),
        host: "host".into(),
        username: "user".into(),
        uid: 1000,
        gid: 100,
        paths: vec!["/home".into(), "/etc".into()],
        tags: vec!["daily".into()],
        parent: Some(SnapshotId(Id::hash_of(b"parent"))),
        original: Some(SnapshotId(Id::hash_of(b"original"))),
        tree: TreeId(blob_id(4).0),
        sources: vec![
            Source::Files {
                paths: vec!["/home".into()],
            },
            Source::MongoDB {
                server: "localhost:27017".into(),
                databases: vec!["app".into()],
                cluster_time: Some(t),
                window_start: None,
                consistent: true,
                chain: None,
            },
            Source::MongoOplog {
                server: "db".into(),
                start: t,
                end: t,
                entries: 5,
                gap_from: Some(t),
            },
        ],
        summary: Summary {
            files_new: 3,
            duration_secs: 1.5,
            ..Default::default()
        },
        program_version: "strata 0.1.0".into(),
    };
    serde_json::to_vec(&s).expect("serialises")
}

pub fn config_sample() -> Vec<u8> {
    let c = Config::new(ChunkerParams::FILES, 1 << 20, 3);
    serde_json::to_vec(&c).expect("serialises")
}

pub fn key_file_sample() -> Vec<u8> {
    let kdf = KdfParams {
        parallelism: 1,
        ..KdfParams::new(64, 1)
    };
    let file = KeyFile::new(&key(), KEY_PASSWORD, kdf).expect("cheap parameters");
    file.to_bytes()
}

pub fn master_key_sample() -> Vec<u8> {
    serde_json::to_vec(&key()).expect("serialises")
}

pub fn lock_sample() -> Vec<u8> {
    let now = "2026-01-02T03:04:05Z".parse().expect("a time");
    let info = LockInfo {
        mode: LockMode::Exclusive,
        created: now,
        refreshed: now,
        host: "host".into(),
        pid: 1,
        username: "user".into(),
        command: "prune".into(),
        boot: "0123456789abcdef0123456789abcdef".into(),
    };
    serde_json::to_vec(&info).expect("serialises")
}

/// A change to a valid encoding. Positions wrap around the input's length.
#[derive(Clone, Debug)]
pub enum Mutation {
    FlipBit {
        at: usize,
    },
    Truncate {
        to: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    /// A length or count field set to an extreme value (u32 little-endian).
    SetU32 {
        at: usize,
        value: u32,
    },
    /// A postcard length prefix (LEB128) of an extreme value put in place of a byte.
    SetVarint {
        at: usize,
        value: u64,
    },
    /// The first number at or after `at` (JSON) replaced by an extreme one.
    SetNumber {
        at: usize,
        text: &'static str,
    },
}

/// Numbers that sit at or just past the limits of the integer types.
pub const EXTREME_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "1e400",
    "99999999999999999999999999",
    "2147483648",
];

pub const EXTREME_U32: &[u32] = &[0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, u32::MAX];

fn wrap(at: usize, len: usize) -> usize {
    at.checked_rem(len).unwrap_or(0)
}

impl Mutation {
    pub fn apply(&self, b: &mut Vec<u8>) {
        let len = b.len();
        match self {
            Mutation::FlipBit { at } if len > 0 => b[wrap(*at / 8, len)] ^= 1 << (at % 8),
            Mutation::Truncate { to } => b.truncate(wrap(*to, len + 1)),
            Mutation::Insert { at, bytes } => drop(b.splice(
                wrap(*at, len + 1)..wrap(*at, len + 1),
                bytes.iter().copied(),
            )),
            Mutation::Remove { at, len: n } => {
                let start = wrap(*at, len + 1);
                b.drain(start..start.saturating_add(*n).min(len));
            }
            Mutation::SetU32 { at, value } if len >= 4 => {
                let at = wrap(*at, len - 3);
                b[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            Mutation::SetVarint { at, value } if len > 0 => {
                let at = wrap(*at, len);
                b.splice(at..at + 1, leb128(*value));
            }
            Mutation::SetNumber { at, text } => set_number(b, wrap(*at, len + 1), text),
            _ => {}
        }
    }

    /// Decodes one mutation from fuzzer bytes, consuming them; None when they run out.
    pub fn take(input: &mut &[u8]) -> Option<Mutation> {
        let (&op, rest) = input.split_first()?;
        let (at, rest) = rest.split_first_chunk::<2>()?;
        let (arg, rest) = rest.split_first_chunk::<2>()?;
        *input = rest;
        let at = u16::from_le_bytes(*at) as usize;
        let arg = u16::from_le_bytes(*arg) as usize;
        Some(match op % 7 {
            0 => Mutation::FlipBit { at },
            1 => Mutation::Truncate { to: at },
            2 => {
                let n = (arg % 16).min(input.len());
                let (bytes, rest) = input.split_at(n);
                *input = rest;
                Mutation::Insert {
                    at,
                    bytes: bytes.to_vec(),
                }
            }
            3 => Mutation::Remove { at, len: arg % 64 },
            4 => Mutation::SetU32 {
                at,
                value: EXTREME_U32[arg % EXTREME_U32.len()],
            },
            5 => Mutation::SetVarint {
                at,
                value: [u64::MAX, u32::MAX as u64, 1 << 40][arg % 3],
            },
            _ => Mutation::SetNumber {
                at,
                text: EXTREME_NUMBERS[arg % EXTREME_NUMBERS.len()],
            },
        })
    }
}

fn leb128(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn set_number(b: &mut Vec<u8>, from: usize, text: &str) {
    let is_num = |c: &u8| c.is_ascii_digit() || *c == b'-';
    let Some(start) = b[from..].iter().position(is_num).map(|i| i + from) else {
        return;
    };
    let end = b[start..]
        .iter()
        .position(|c| !is_num(c))
        .map_or(b.len(), |i| i + start);
    b.splice(start..end, text.bytes());
}

/// Runs `parser` on fuzzer bytes: its first byte chooses between the bytes themselves and
/// mutations of the parser's valid encoding that the rest of them describe.
pub fn fuzz(name: &str, data: &[u8]) {
    let p = parser(name);
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        (p.parse)(rest);
        return;
    }
    let mut input = sample(p).to_vec();
    while let Some(m) = Mutation::take(&mut rest) {
        m.apply(&mut input);
    }
    (p.parse)(&input);
}

/// A parser's valid encoding, made once per process.
pub fn sample(p: &Parser) -> &'static [u8] {
    static SAMPLES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let all = SAMPLES.get_or_init(|| PARSERS.iter().map(|p| (p.sample)()).collect());
    let i = PARSERS
        .iter()
        .position(|q| q.name == p.name)
        .expect("listed");
    &all[i]
}
