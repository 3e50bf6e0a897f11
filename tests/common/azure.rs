//! Azure Blob Storage test servers: Azurite's blob service (`azurite-blob` from the npm
//! package that `.ci/setup` installs, or `$STRATA_AZURITE_BIN`) on a free port of 127.0.0.1
//! with its data in a temp dir, stopped when dropped. It checks requests against its
//! well-known development account, whose name and key the tests use as credentials.
use super::server::{Process, StoreServer, installed};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};

/// Azurite's development account and its key (published in Azurite's documentation).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The account as the environment gives it to strata.
pub const CREDENTIALS: [(&str, &str); 2] =
    [("AZURE_ACCOUNT_NAME", ACCOUNT), ("AZURE_ACCOUNT_KEY", KEY)];

/// An Azurite blob server of one test, stopped when dropped.
pub struct Azurite {
    server: Process,
}

impl Azurite {
    /// The account's blob endpoint: `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("{}/{ACCOUNT}", self.server.url())
    }

    /// The connection string of the account on this server.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={};",
            self.endpoint()
        )
    }
}

impl StoreServer for Azurite {
    fn start() -> Azurite {
        let bin = installed(
            "STRATA_AZURITE_BIN",
            "azurite/node_modules/.bin/azurite-blob",
            "Azure test server (azurite-blob)",
        );
        let args = |port: u16, dir: &std::path::Path| {
            let port = port.to_string();
            let mut args: Vec<std::ffi::OsString> = [
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port,
                "--location",
            ]
            .iter()
            .map(Into::into)
            .collect();
            args.push(dir.join("data").into());
            args
        };
        Azurite {
            server: Process::start("azurite", &bin, args, &[]),
        }
    }

    /// Creates `container`, signed with the account's key (Azurite takes no unsigned
    /// requests).
    fn create_bucket(&self, container: &str) {
        let path = format!("/{ACCOUNT}/{container}");
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        // Shared Key: the verb, eleven empty standard headers (a zero Content-Length is
        // signed as empty), the x-ms- headers, and the resource with its query.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
             /{ACCOUNT}{path}\nrestype:container"
        );
        let key = BASE64.decode(KEY).expect("the key is base64");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(to_sign.as_bytes());
        let signature = BASE64.encode(mac.finalize().into_bytes());
        let headers = [
            ("x-ms-date", date),
            ("x-ms-version", version.to_string()),
            ("Authorization", format!("SharedKey {ACCOUNT}:{signature}")),
        ];
        let target = format!("{path}?restype=container");
        let (status, answer) = self.server.request("PUT", &target, &headers, b"");
        assert_eq!(status, 201, "create container {container}: {answer}");
    }

    fn location(&self, container: &str, prefix: &str) -> String {
        format!("azure:{container}:/{prefix}")
    }

    fn options(&self) -> Vec<(String, String)> {
        vec![("azure.endpoint".into(), self.endpoint())]
    }

    fn credentials(&self) -> &'static [(&'static str, &'static str)] {
        &CREDENTIALS
    }

    fn log(&self) -> String {
        self.server.log()
    }
}
