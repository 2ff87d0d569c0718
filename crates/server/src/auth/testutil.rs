//! Test helpers: real keys and signatures from the machine's `ssh-keygen`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ssh_key::PublicKey;

/// A DSA public key (made once with `ssh-keygen -t dsa`): newer OpenSSH builds cannot make one.
pub const DSA_FIXTURE: &str = "AAAAB3NzaC1kc3MAAACBAOybTJRU3LxmE7DaYZpiKkcWsqABkLAGKk0oFnp8vWUmuKkyhOcMZ3uBzuUDkJbAiKcJdFNaKgSinFC6DjGM44MJN/AvT1YBccoJr3QNWH1YKkPFUe1F10DhE/0GOylWIyWXzvh/a3Z2CJg2WnpmkdlhRt8YJQuU2OJfkqW1TIRNAAAAFQC1sjlXjs0mKYhQvlINqMOTFTbKEwAAAIB/pBOokMQqhd3phSaDRbQMX87fqFZHEK/trqD96kQ4YSi02U7f3h7iVB6h11VDkHwGNc5Pe83jBmP1li6ItmGRX5BytPpMtTDmv2xJWObCoFUgvU7KsEpD/JpL9J0HKZcBuYKxkHc2GNpvvnFBEHQFOBom/wTaT1XsaWO/PJBp+AAAAIAWPIUOeOYu8Ui3hvu2ZO/8/8s2JsoPZj7N/0yQRaDP21D6XiwCHXxhXhLc6DIPUEqalcAtDNxWduaNEKh+ChwWU40nWSngriRLv5hiVNH+Q5fgCw+Z3nusTIF2AyQ/NK0fDDI4dvkWM65djQbcycTrnEhQ8iW2NVqV1iKd+pZ8Qw==";

/// A fixed ed25519 public key line (no private key needed).
pub const ED_FIXTURE_LINE: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfXN2TSEmO465XhAvih0RjRIuN+6iec1QeA+nuI8D7c fixture";

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn localhost() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// A key pair made by ssh-keygen.
#[derive(Debug, Clone)]
pub struct TestKey {
    /// Private key file.
    pub path: PathBuf,
    pub public: PublicKey,
    /// The .pub line, comment included, no trailing newline.
    pub pub_line: String,
    /// `SHA256:...` as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
}

impl TestKey {
    pub fn pub_line_no_comment(&self) -> String {
        self.pub_line
            .split(' ')
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `ssh-keygen -t KIND [-b BITS] -N PASS -C NAME -f DIR/NAME`.
pub fn keygen_pass(
    dir: &tempfile::TempDir,
    name: &str,
    kind: &str,
    bits: Option<u32>,
    pass: &str,
) -> TestKey {
    let path = dir.path().join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", pass, "-C", name, "-f"])
        .arg(&path);
    if let Some(b) = bits {
        cmd.args(["-b", &b.to_string()]);
    }
    run(&mut cmd);
    let pub_line = std::fs::read_to_string(path.with_extension("pub"))
        .or_else(|_| std::fs::read_to_string(format!("{}.pub", path.display())))
        .expect("read .pub")
        .trim()
        .to_owned();
    let public = PublicKey::from_openssh(&pub_line).expect("parse .pub");
    let fingerprint = fingerprint_of(&path);
    TestKey {
        path,
        public,
        pub_line,
        fingerprint,
    }
}

pub fn keygen(dir: &tempfile::TempDir, name: &str, kind: &str, bits: Option<u32>) -> TestKey {
    keygen_pass(dir, name, kind, bits, "")
}

/// The `SHA256:...` field of `ssh-keygen -lf FILE`.
pub fn fingerprint_of(path: &Path) -> String {
    let out = run(Command::new("ssh-keygen").arg("-lf").arg(path));
    out.split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_owned()
}

/// `printf '%s' MSG | ssh-keygen -Y sign -n NAMESPACE -f KEY` (extra args e.g. `-O hashalg=sha256`).
pub fn keygen_sign(key: &Path, namespace: &str, msg: &str, extra: &[&str]) -> String {
    use std::io::Write as _;
    let mut child = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", namespace])
        .args(extra)
        .arg("-f")
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssh-keygen");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(msg.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `ssh-keygen -Y verify` of `armored` over `msg` by `public` (namespace ccrelay-auth).
pub fn keygen_verify(dir: &Path, public: &PublicKey, msg: &str, armored: &str) -> bool {
    use std::io::Write as _;
    let signers = dir.join("allowed_signers");
    let line = format!(
        "tester namespaces=\"ccrelay-auth\" {}\n",
        public.to_openssh().unwrap()
    );
    std::fs::write(&signers, line).unwrap();
    let sigfile = dir.join("msg.sig");
    std::fs::write(&sigfile, armored).unwrap();
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-I", "tester", "-n", "ccrelay-auth", "-f"])
        .arg(&signers)
        .arg("-s")
        .arg(&sigfile)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(msg.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    out.status.success()
}

/// The fields of an SSHSIG blob, for tests that tamper with them.
#[derive(Debug, Clone)]
pub struct SigFields {
    pub key_blob: Vec<u8>,
    pub namespace: Vec<u8>,
    pub reserved: Vec<u8>,
    pub hash: Vec<u8>,
    pub sig_blob: Vec<u8>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

pub fn split_fields(armored: &str) -> SigFields {
    use base64::Engine as _;
    let body: String = armored
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let blob = b64().decode(body).unwrap();
    assert_eq!(&blob[..6], b"SSHSIG");
    let mut rest = &blob[10..];
    let mut next = || {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let v = rest[4..4 + len].to_vec();
        rest = &rest[4 + len..];
        v
    };
    SigFields {
        key_blob: next(),
        namespace: next(),
        reserved: next(),
        hash: next(),
        sig_blob: next(),
    }
}

pub fn ssh_string(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
    out.extend_from_slice(v);
}

pub fn join_fields(f: &SigFields) -> String {
    use base64::Engine as _;
    let mut blob = b"SSHSIG".to_vec();
    blob.extend_from_slice(&1u32.to_be_bytes());
    for v in [&f.key_blob, &f.namespace, &f.reserved, &f.hash, &f.sig_blob] {
        ssh_string(&mut blob, v);
    }
    let b = b64().encode(blob);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(70)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n",
        lines.join("\n")
    )
}
