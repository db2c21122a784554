//! Epoch keys: the keys that wrap the data keys.
//!
//! sled is log-structured, so a value it overwrites (a wrapped data key replaced by
//! a tombstone) can survive in an old segment of its file. Wrapping the data keys
//! under a key that lives outside sled, in a small file of its own, makes that copy
//! useless once the file is destroyed: a rotation wraps every live data key under a
//! new epoch key, syncs, and then overwrites, syncs and removes the old epoch's file.
//!
//! An epoch file is `<dir>/<number>.key` (number in 10 decimal digits), mode 0600:
//! `created_unix_s (8, LE) || nonce (24) || seal(master key, epoch key)` with
//! `"nexus vault epoch <number>"` as the associated data, so a file cannot be
//! renamed into another epoch.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{corrupt, random_array, sync_dir, MasterKey, VaultError, KEY_BYTES, NONCE_BYTES};
use super::{TAG_BYTES, WRAPPED_KEY_LEN};

/// The length of an epoch file.
pub(super) const EPOCH_FILE_LEN: usize = 8 + WRAPPED_KEY_LEN;
const _: () = assert!(EPOCH_FILE_LEN == 8 + NONCE_BYTES + KEY_BYTES + TAG_BYTES);
/// Most epoch files read at open: two exist only while a rotation runs (or after
/// one was interrupted); more means the directory is not ours.
pub(super) const MAX_EPOCH_FILES: usize = 8;
const FILE_SUFFIX: &str = ".key";
const NUMBER_DIGITS: usize = 10;

/// A key that wraps data keys. Never printed; wiped when dropped.
pub(super) struct EpochKey([u8; KEY_BYTES]);

impl EpochKey {
    pub(super) fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(self.0))
    }

    /// The epoch's key of keyed lookup hashes for `purpose`:
    /// HMAC-SHA256(epoch key, "nexus-lookup-v1\n" || purpose). It lives as long
    /// as the epoch key it is derived from.
    pub(super) fn derive(&self, purpose: &str) -> [u8; KEY_BYTES] {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        mac.update(b"nexus-lookup-v1\n");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl Drop for EpochKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for EpochKey {}

/// One epoch: its number, when it began, its key and its file.
pub(super) struct Epoch {
    pub number: u32,
    pub created_unix_s: u64,
    pub key: EpochKey,
    pub path: PathBuf,
}

fn associated_data(number: u32) -> Vec<u8> {
    format!("nexus vault epoch {number}").into_bytes()
}

fn file_name(number: u32) -> String {
    format!("{number:0width$}{FILE_SUFFIX}", width = NUMBER_DIGITS)
}

/// The epoch number a file name stands for, if it is an epoch file's name.
fn parse_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(FILE_SUFFIX)?;
    if digits.len() != NUMBER_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Creates the directory (owner-only) if it does not exist.
pub(super) fn ensure_dir(dir: &Path) -> Result<(), VaultError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    Ok(())
}

/// Every epoch file in `dir`, oldest first. `master_verified`: whether the master
/// key was checked against the vault's check record; if not, a file that does not
/// open under it means a wrong master key rather than a damaged file.
pub(super) fn load_all(
    dir: &Path,
    master: &MasterKey,
    master_verified: bool,
) -> Result<Vec<Epoch>, VaultError> {
    let mut epochs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(number) = entry.file_name().to_str().and_then(parse_file_name) else {
            continue;
        };
        if epochs.len() == MAX_EPOCH_FILES {
            return Err(corrupt("more epoch key files than a rotation leaves"));
        }
        epochs.push(read(&entry.path(), number, master, master_verified)?);
    }
    epochs.sort_by_key(|e| e.number);
    Ok(epochs)
}

fn read(
    path: &Path,
    number: u32,
    master: &MasterKey,
    master_verified: bool,
) -> Result<Epoch, VaultError> {
    let contents = Zeroizing::new(std::fs::read(path)?);
    if contents.len() != EPOCH_FILE_LEN {
        return Err(corrupt("epoch key file of unexpected length"));
    }
    let (created, rest) = contents.split_at(8);
    let (nonce, sealed) = rest.split_at(NONCE_BYTES);
    let nonce = XNonce::try_from(nonce).map_err(|_| corrupt("epoch key file nonce"))?;
    let ad = associated_data(number);
    let plain = Zeroizing::new(
        master
            .cipher()
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: &ad,
                },
            )
            .map_err(|_| match master_verified {
                true => corrupt("epoch key file failed authentication"),
                false => VaultError::WrongMasterKey,
            })?,
    );
    if plain.len() != KEY_BYTES {
        return Err(corrupt("epoch key of unexpected length"));
    }
    let mut key = EpochKey([0u8; KEY_BYTES]);
    key.0.copy_from_slice(&plain);
    let mut created_bytes = [0u8; 8];
    created_bytes.copy_from_slice(created);
    Ok(Epoch {
        number,
        created_unix_s: u64::from_le_bytes(created_bytes),
        key,
        path: path.to_path_buf(),
    })
}

/// Generates epoch `number`'s key and writes its file durably (file and directory
/// synced) before returning it. Refuses to replace an existing file.
pub(super) fn create(
    dir: &Path,
    number: u32,
    created_unix_s: u64,
    master: &MasterKey,
) -> Result<Epoch, VaultError> {
    let key = EpochKey(random_array()?);
    let nonce: [u8; NONCE_BYTES] = random_array()?;
    let ad = associated_data(number);
    let sealed = master
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &key.0,
                aad: &ad,
            },
        )
        .map_err(|_| corrupt("epoch key wrapping failed"))?;
    let mut contents = Vec::with_capacity(EPOCH_FILE_LEN);
    contents.extend_from_slice(&created_unix_s.to_le_bytes());
    contents.extend_from_slice(&nonce);
    contents.extend_from_slice(&sealed);
    assert_eq!(contents.len(), EPOCH_FILE_LEN);
    let path = dir.join(file_name(number));
    let mut options = File::options();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    let written = file.write_all(&contents).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e.into());
    }
    sync_dir(dir)?;
    Ok(Epoch {
        number,
        created_unix_s,
        key,
        path,
    })
}

/// Destroys an epoch's file: overwrites it with zeros and syncs, then removes it
/// and syncs the directory. On a file system that writes in place this leaves no
/// copy of the wrapped epoch key; see docs/SECURITY.md for the ones that do not.
pub(super) fn destroy(path: &Path) -> io::Result<()> {
    let mut file = File::options().write(true).open(path)?;
    file.write_all(&[0u8; EPOCH_FILE_LEN])?;
    file.sync_all()?;
    drop(file);
    std::fs::remove_file(path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_refuse_strangers() {
        assert_eq!(file_name(7), "0000000007.key");
        assert_eq!(parse_file_name("0000000007.key"), Some(7));
        assert_eq!(parse_file_name(&file_name(u32::MAX)), Some(u32::MAX));
        for stranger in [
            "7.key",
            "000000000x.key",
            "0000000007.txt",
            "00000000007.key",
        ] {
            assert_eq!(parse_file_name(stranger), None, "{stranger}");
        }
    }
}
