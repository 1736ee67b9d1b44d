//! A minimal PKCS#12 (RFC 7292) reader for `BT_CLIENT_CERTIFICATE_PATH`: the `.pfx`/`.p12` files
//! BeyondInsight, Windows and OpenSSL write, holding one private key and its certificate chain.
//!
//! What it reads:
//! - integrity: the password MAC, HMAC-SHA1/SHA-256/SHA-384/SHA-512 keyed with the RFC 7292
//!   appendix B key derivation; a file without MAC is accepted;
//! - privacy: PBES2 (PBKDF2 with HMAC-SHA1/SHA-256/SHA-384/SHA-512, then AES-128/192/256-CBC or
//!   3DES-CBC) and the PKCS#12 PBES1 schemes `pbeWithSHAAnd3-KeyTripleDES-CBC`,
//!   `pbeWithSHAAnd2-KeyTripleDES-CBC`, `pbeWithSHAAnd128BitRC2-CBC` and
//!   `pbeWithSHAAnd40BitRC2-CBC`; contents of type data and encryptedData;
//! - bags: keyBag, pkcs8ShroudedKeyBag, certBag (x509Certificate), safeContentsBag; other bags
//!   are skipped.
//!
//! DER and the BER forms Windows writes (indefinite lengths, constructed OCTET STRINGs) are read
//! by a small bounded TLV reader. Hostile input gives an error, never a panic or a hang: the file
//! size, nesting depth, number of bags, salt sizes and key-derivation iteration counts are all
//! bounded. Decrypted bytes and the key live in zeroizing buffers; nothing here logs.

use std::{fmt, ops::Deref};

use cbc::cipher::{BlockCipherDecrypt, BlockModeDecrypt, InnerIvInit, KeyInit, block_padding::Pkcs7};
use ring::{digest, hmac, pbkdf2};
use secrecy::{SecretSlice, zeroize::Zeroizing};

/// The largest file read (a key and a long chain are a few KiB).
pub const MAX_INPUT: usize = 1 << 20;
/// The largest iteration count accepted for one key derivation (OpenSSL writes 2048).
pub const MAX_ITERATIONS: u64 = 10_000_000;
/// The most iterations spent on one file, all derivations together.
const MAX_TOTAL_ITERATIONS: u64 = 3 * MAX_ITERATIONS;
const MAX_DEPTH: u32 = 32;
const MAX_BAGS: usize = 256;
const MAX_SALT: usize = 1024;

/// What a PKCS#12 file holds.
pub struct Identity {
    /// DER certificates: the private key's certificate first, then the others in file order.
    pub certificates: Vec<Vec<u8>>,
    /// The private key, PKCS#8 `PrivateKeyInfo` DER.
    pub private_key: SecretSlice<u8>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.certificates.len())
            .field("private_key", &"[redacted]")
            .finish()
    }
}

/// Why a file cannot be read. No variant carries key material or the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs12Error {
    /// The MAC does not verify: the wrong password (or a damaged file).
    #[error("the PKCS#12 MAC does not verify")]
    Mac,
    /// Decryption gave no valid plaintext: the wrong password (in a file without MAC).
    #[error("decryption failed ({0})")]
    Decrypt(&'static str),
    /// Not PKCS#12, or damaged.
    #[error("not a valid PKCS#12 file: {0}")]
    Malformed(&'static str),
    /// Not PKCS#12, or damaged: an element is missing or of the wrong type.
    #[error("not a valid PKCS#12 file: bad or missing {0}")]
    Expected(&'static str),
    /// A valid file using something this reader does not implement.
    #[error("unsupported {what}: {name}")]
    Unsupported {
        /// What kind of thing (an encryption algorithm, a MAC algorithm, a content type).
        what: &'static str,
        /// Its name or OID.
        name: String,
    },
    /// A key derivation with more iterations than [`MAX_ITERATIONS`] (or too many in total).
    #[error("key derivation iteration count {0} is above the limit of {MAX_ITERATIONS}")]
    TooCostly(u64),
    /// Well-formed, but not one private key with a certificate.
    #[error("{0}")]
    Content(String),
}

type Result<T, E = Pkcs12Error> = std::result::Result<T, E>;

fn malformed<T>(what: &'static str) -> Result<T> {
    Err(Pkcs12Error::Malformed(what))
}

fn unsupported<T>(what: &'static str, name: impl Into<String>) -> Result<T> {
    Err(Pkcs12Error::Unsupported {
        what,
        name: name.into(),
    })
}

/// Decodes a PKCS#12 file with `password` (empty = no password).
pub fn decode(der: &[u8], password: &str) -> Result<Identity> {
    decode_metered(der, password).0
}

/// [`decode`], and the key-derivation iterations it ran: the work hostile input can ask for,
/// bounded by `MAX_TOTAL_ITERATIONS` (the property tests check it).
fn decode_metered(der: &[u8], password: &str) -> (Result<Identity>, u64) {
    let mut decoder = Decoder {
        password,
        bmp_password: Zeroizing::new(Vec::new()),
        budget: MAX_TOTAL_ITERATIONS,
        derived: 0,
        bags: 0,
        keys: Vec::new(),
        certs: Vec::new(),
    };
    let read = decoder.pfx(der);
    let derived = decoder.derived;
    (read.and_then(|()| decoder.identity()), derived)
}

// ---- Structure --------------------------------------------------------------------------------

/// The `localKeyId` attribute of a bag, linking a key to its certificate.
type LocalKeyId = Option<Vec<u8>>;

struct Decoder<'p> {
    password: &'p str,
    /// The password as the PKCS#12 KDF takes it (BMPString + NUL), the variant the MAC accepted.
    bmp_password: Zeroizing<Vec<u8>>,
    budget: u64,
    /// Iterations of the key derivations run so far (each was charged to `budget` first).
    derived: u64,
    bags: usize,
    keys: Vec<(LocalKeyId, Zeroizing<Vec<u8>>)>,
    certs: Vec<(LocalKeyId, Vec<u8>)>,
}

impl Decoder<'_> {
    /// PFX ::= SEQUENCE { version INTEGER {v3(3)}, authSafe ContentInfo, macData MacData OPTIONAL }
    fn pfx(&mut self, der: &[u8]) -> Result<()> {
        if der.len() > MAX_INPUT {
            return malformed("larger than 1 MiB");
        }
        let mut top = Reader::new(der, 0);
        let pfx = top.expect(SEQUENCE, "PFX")?;
        let mut r = pfx.reader()?;
        let version = r.expect(INTEGER, "PFX version")?.uint()?;
        if version != 3 {
            return unsupported("PFX version", version.to_string());
        }
        let (ctype, content) = content_info(r.expect(SEQUENCE, "authSafe")?)?;
        match ctype {
            OID_DATA => {}
            OID_SIGNED_DATA => return unsupported("integrity mode", "public-key (signedData)"),
            _ => return malformed("authSafe is not data"),
        }
        let auth_safe = data_octets(content)?;
        if r.is_empty() {
            *self.bmp_password = bmp(self.password);
        } else {
            let mac = r.expect(SEQUENCE, "macData")?;
            self.verify_mac(mac, &auth_safe)?;
        }

        let mut safes = Reader::new(&auth_safe, pfx.depth + 1);
        let list = safes.expect(SEQUENCE, "AuthenticatedSafe")?;
        let mut list = list.reader()?;
        while !list.is_empty() {
            let (ctype, content) = content_info(list.expect(SEQUENCE, "ContentInfo")?)?;
            match ctype {
                OID_DATA => {
                    let octets = data_octets(content)?;
                    self.safe_contents(&octets, content.depth + 1)?;
                }
                OID_ENCRYPTED_DATA => {
                    let plain = self.encrypted_data(content)?;
                    self.safe_contents(&plain, content.depth + 1)?;
                }
                OID_ENVELOPED_DATA => return unsupported("privacy mode", "public-key (envelopedData)"),
                other => return unsupported("content type", oid_name(other)),
            }
        }
        Ok(())
    }

    fn charge(&mut self, iterations: u64) -> Result<()> {
        if iterations == 0 {
            return malformed("iteration count 0");
        }
        if iterations > MAX_ITERATIONS || iterations > self.budget {
            return Err(Pkcs12Error::TooCostly(iterations));
        }
        self.budget -= iterations;
        Ok(())
    }

    /// MacData ::= SEQUENCE { mac DigestInfo, macSalt OCTET STRING, iterations INTEGER DEFAULT 1 }
    fn verify_mac(&mut self, mac: Tlv<'_>, content: &[u8]) -> Result<()> {
        let mut r = mac.reader()?;
        let mut info = r.expect(SEQUENCE, "MAC DigestInfo")?.reader()?;
        let (oid, _) = algorithm(info.expect(SEQUENCE, "MAC algorithm")?)?;
        let expected = info.expect_octets("MAC value")?;
        let salt = r.expect_octets("MAC salt")?;
        let iterations = if r.is_empty() {
            1
        } else {
            r.expect(INTEGER, "MAC iterations")?.uint()?
        };
        let (md, hmac_alg) = match oid {
            OID_SHA1 => (
                &digest::SHA1_FOR_LEGACY_USE_ONLY,
                hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            ),
            OID_SHA256 => (&digest::SHA256, hmac::HMAC_SHA256),
            OID_SHA384 => (&digest::SHA384, hmac::HMAC_SHA384),
            OID_SHA512 => (&digest::SHA512, hmac::HMAC_SHA512),
            OID_PBMAC1 => return unsupported("MAC algorithm", "PBMAC1 (RFC 9579)"),
            other => return unsupported("MAC algorithm", oid_name(other)),
        };
        // An empty password is the BMPString "" (two zero bytes) for OpenSSL, and no bytes at all
        // for some Windows versions: try both, like OpenSSL does.
        let mut candidates = vec![Zeroizing::new(bmp(self.password))];
        if self.password.is_empty() {
            candidates.push(Zeroizing::new(Vec::new()));
        }
        for candidate in candidates {
            self.charge(iterations)?;
            self.derived += iterations;
            let key = pkcs12_kdf(md, &candidate, &salt, 3, iterations, md.output_len())?;
            if hmac::verify(&hmac::Key::new(hmac_alg, &key), content, &expected).is_ok() {
                self.bmp_password = candidate;
                return Ok(());
            }
        }
        Err(Pkcs12Error::Mac)
    }

    /// EncryptedData ::= SEQUENCE { version, EncryptedContentInfo ::= SEQUENCE { contentType,
    /// contentEncryptionAlgorithm, encryptedContent [0] IMPLICIT OCTET STRING OPTIONAL } }
    fn encrypted_data(&mut self, content: Tlv<'_>) -> Result<Zeroizing<Vec<u8>>> {
        let mut r = content.reader()?;
        let mut data = r.expect(SEQUENCE, "EncryptedData")?.reader()?;
        data.expect(INTEGER, "EncryptedData version")?;
        let mut info = data.expect(SEQUENCE, "EncryptedContentInfo")?.reader()?;
        if info.expect(OID, "encrypted content type")?.value != OID_DATA {
            return malformed("encrypted content is not data");
        }
        let alg = info.expect(SEQUENCE, "content encryption algorithm")?;
        let encrypted = info.read()?;
        if encrypted.tag & !CONSTRUCTED != CONTEXT {
            return malformed("encryptedContent");
        }
        let encrypted = encrypted.octets()?;
        self.decrypt(alg, &encrypted)
    }

    /// SafeContents ::= SEQUENCE OF SafeBag
    fn safe_contents(&mut self, der: &[u8], depth: u32) -> Result<()> {
        let mut top = Reader::new(der, depth);
        let mut bags = top.expect(SEQUENCE, "SafeContents")?.reader()?;
        while !bags.is_empty() {
            self.bags += 1;
            if self.bags > MAX_BAGS {
                return malformed("too many bags");
            }
            // SafeBag ::= SEQUENCE { bagId, bagValue [0] EXPLICIT, bagAttributes SET OPTIONAL }
            let bag = bags.expect(SEQUENCE, "SafeBag")?;
            let mut b = bag.reader()?;
            let id = b.expect(OID, "bag type")?.value;
            let value = b.expect(CONTEXT | CONSTRUCTED, "bag value")?.reader()?.read()?;
            let local_key_id = if b.is_empty() {
                None
            } else {
                local_key_id(b.expect(SET, "bag attributes")?)?
            };
            match id {
                OID_KEY_BAG => {
                    let key = Zeroizing::new(value.raw.to_vec());
                    if !is_pkcs8(&key, bag.depth + 2) {
                        return malformed("keyBag is not a PKCS#8 private key");
                    }
                    self.keys.push((local_key_id, key));
                }
                OID_SHROUDED_KEY_BAG => {
                    let key = self.shrouded_key(value)?;
                    self.keys.push((local_key_id, key));
                }
                OID_CERT_BAG => {
                    // CertBag ::= SEQUENCE { certId, certValue [0] EXPLICIT OCTET STRING }
                    if value.tag != SEQUENCE {
                        return malformed("certBag");
                    }
                    let mut c = value.reader()?;
                    if c.expect(OID, "certificate type")?.value != OID_X509_CERT {
                        continue; // SDSI certificates
                    }
                    let der = c
                        .expect(CONTEXT | CONSTRUCTED, "certificate")?
                        .reader()?
                        .expect_octets("certificate")?;
                    let mut cert = Reader::new(&der, value.depth + 2);
                    let seq = cert.expect(SEQUENCE, "certificate")?;
                    if !cert.is_empty() || seq.indefinite {
                        return malformed("certificate is not DER");
                    }
                    self.certs.push((local_key_id, der.to_vec()));
                }
                OID_SAFE_CONTENTS_BAG => {
                    if value.depth >= MAX_DEPTH {
                        return malformed("nested too deeply");
                    }
                    self.safe_contents(value.raw, value.depth + 1)?;
                }
                _ => {} // CRLs, secrets, unknown bags
            }
        }
        Ok(())
    }

    /// EncryptedPrivateKeyInfo ::= SEQUENCE { encryptionAlgorithm, encryptedData OCTET STRING }
    fn shrouded_key(&mut self, value: Tlv<'_>) -> Result<Zeroizing<Vec<u8>>> {
        if value.tag != SEQUENCE {
            return malformed("pkcs8ShroudedKeyBag");
        }
        let mut r = value.reader()?;
        let alg = r.expect(SEQUENCE, "key encryption algorithm")?;
        let encrypted = r.expect_octets("encrypted key")?;
        let key = self.decrypt(alg, &encrypted)?;
        if !is_pkcs8(&key, value.depth + 1) {
            return Err(Pkcs12Error::Decrypt(
                "the decrypted key is not a PKCS#8 private key",
            ));
        }
        Ok(key)
    }

    fn decrypt(&mut self, alg: Tlv<'_>, data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (oid, params) = algorithm(alg)?;
        if oid == OID_PBES2 {
            return self.pbes2(params, data);
        }
        let Some(&[id]) = oid.strip_prefix(OID_PKCS12_PBE) else {
            return unsupported("encryption algorithm", oid_name(oid));
        };
        // pkcs-12PbeParams ::= SEQUENCE { salt OCTET STRING, iterations INTEGER }
        let Some(params) = params.filter(|p| p.tag == SEQUENCE) else {
            return malformed("PBE parameters");
        };
        let mut p = params.reader()?;
        let salt = p.expect_octets("PBE salt")?;
        let iterations = p.expect(INTEGER, "PBE iterations")?.uint()?;
        let key_len = match id {
            3 => 24,
            4 | 5 => 16,
            6 => 5,
            _ => return unsupported("encryption algorithm", oid_name(oid)),
        };
        self.charge(iterations)?;
        self.charge(iterations)?;
        self.derived += 2 * iterations;
        let sha1 = &digest::SHA1_FOR_LEGACY_USE_ONLY;
        let key = pkcs12_kdf(sha1, &self.bmp_password, &salt, 1, iterations, key_len)?;
        let iv = pkcs12_kdf(sha1, &self.bmp_password, &salt, 2, iterations, 8)?;
        match id {
            3 => cbc_decrypt(key_init::<des::TdesEde3>(&key)?, &iv, data),
            4 => cbc_decrypt(key_init::<des::TdesEde2>(&key)?, &iv, data),
            5 => cbc_decrypt(rc2::Rc2::new_with_eff_key_len(&key, 128), &iv, data),
            _ => cbc_decrypt(rc2::Rc2::new_with_eff_key_len(&key, 40), &iv, data),
        }
    }

    /// PBES2-params ::= SEQUENCE { keyDerivationFunc, encryptionScheme }
    fn pbes2(&mut self, params: Option<Tlv<'_>>, data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let Some(params) = params.filter(|p| p.tag == SEQUENCE) else {
            return malformed("PBES2 parameters");
        };
        let mut p = params.reader()?;
        let (kdf, kdf_params) = algorithm(p.expect(SEQUENCE, "PBES2 key derivation")?)?;
        let (cipher, iv) = algorithm(p.expect(SEQUENCE, "PBES2 encryption scheme")?)?;
        if kdf != OID_PBKDF2 {
            return unsupported("key derivation", oid_name(kdf));
        }
        let key_len = match cipher {
            OID_AES128_CBC => 16,
            OID_AES192_CBC | OID_DES_EDE3_CBC => 24,
            OID_AES256_CBC => 32,
            other => return unsupported("encryption algorithm", oid_name(other)),
        };
        let Some(iv) = iv.filter(|iv| iv.tag == OCTET_STRING) else {
            return malformed("PBES2 IV");
        };
        // PBKDF2-params ::= SEQUENCE { salt OCTET STRING, iterationCount INTEGER,
        //   keyLength INTEGER OPTIONAL, prf AlgorithmIdentifier DEFAULT hmacWithSHA1 }
        let Some(kdf_params) = kdf_params.filter(|p| p.tag == SEQUENCE) else {
            return malformed("PBKDF2 parameters");
        };
        let mut k = kdf_params.reader()?;
        let salt = k.read()?;
        if salt.tag != OCTET_STRING {
            return unsupported("PBKDF2 salt", "otherSource");
        }
        if salt.value.len() > MAX_SALT {
            return malformed("salt too long");
        }
        let iterations = k.expect(INTEGER, "PBKDF2 iterations")?.uint()?;
        let mut next = (!k.is_empty()).then(|| k.read()).transpose()?;
        if let Some(len) = next.filter(|t| t.tag == INTEGER) {
            if len.uint()? != key_len as u64 {
                return malformed("PBKDF2 key length does not match the cipher");
            }
            next = (!k.is_empty()).then(|| k.read()).transpose()?;
        }
        let prf = match next {
            None => pbkdf2::PBKDF2_HMAC_SHA1,
            Some(prf) if prf.tag == SEQUENCE => match algorithm(prf)?.0 {
                OID_HMAC_SHA1 => pbkdf2::PBKDF2_HMAC_SHA1,
                OID_HMAC_SHA256 => pbkdf2::PBKDF2_HMAC_SHA256,
                OID_HMAC_SHA384 => pbkdf2::PBKDF2_HMAC_SHA384,
                OID_HMAC_SHA512 => pbkdf2::PBKDF2_HMAC_SHA512,
                other => return unsupported("PBKDF2 pseudo-random function", oid_name(other)),
            },
            Some(_) => return malformed("PBKDF2 parameters"),
        };
        self.charge(iterations)?;
        let rounds = std::num::NonZeroU32::new(
            u32::try_from(iterations).map_err(|_| Pkcs12Error::TooCostly(iterations))?,
        )
        .ok_or(Pkcs12Error::Malformed("iteration count 0"))?;
        let mut key = Zeroizing::new([0u8; 32]);
        let key = &mut key[..key_len];
        self.derived += iterations;
        pbkdf2::derive(prf, rounds, salt.value, self.password.as_bytes(), key);
        let iv = iv.value;
        match cipher {
            OID_AES128_CBC => cbc_decrypt(key_init::<aes::Aes128>(key)?, iv, data),
            OID_AES192_CBC => cbc_decrypt(key_init::<aes::Aes192>(key)?, iv, data),
            OID_AES256_CBC => cbc_decrypt(key_init::<aes::Aes256>(key)?, iv, data),
            _ => cbc_decrypt(key_init::<des::TdesEde3>(key)?, iv, data),
        }
    }

    /// The key's certificate first (same localKeyId; else the only certificate with a
    /// localKeyId; else the first certificate), then the others in file order.
    fn identity(mut self) -> Result<Identity> {
        let (key_id, key) = match self.keys.len() {
            1 => self.keys.remove(0),
            0 => return Err(Pkcs12Error::Content("it holds no private key".into())),
            n => {
                return Err(Pkcs12Error::Content(format!(
                    "it holds {n} private keys; ps-agent needs exactly one"
                )));
            }
        };
        if self.certs.is_empty() {
            return Err(Pkcs12Error::Content("it holds no X.509 certificate".into()));
        }
        let by_id = key_id
            .as_ref()
            .and_then(|id| self.certs.iter().position(|(c, _)| c.as_ref() == Some(id)));
        let leaf = match by_id {
            Some(i) => i,
            None => {
                let mut with_id = self.certs.iter().enumerate().filter(|(_, (id, _))| id.is_some());
                match (with_id.next(), with_id.next()) {
                    (None, _) => 0,
                    (Some((i, _)), None) => i,
                    (Some(_), Some(_)) => {
                        return Err(Pkcs12Error::Content(
                            "no certificate has the private key's localKeyId".into(),
                        ));
                    }
                }
            }
        };
        let mut certificates = Vec::with_capacity(self.certs.len());
        certificates.push(self.certs.remove(leaf).1);
        certificates.extend(self.certs.into_iter().map(|(_, der)| der));
        Ok(Identity {
            certificates,
            private_key: SecretSlice::from(key.to_vec()),
        })
    }
}

/// ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT ANY }
fn content_info(info: Tlv<'_>) -> Result<(&[u8], Tlv<'_>)> {
    let mut r = info.reader()?;
    let ctype = r.expect(OID, "content type")?.value;
    let content = r.expect(CONTEXT | CONSTRUCTED, "content")?;
    Ok((ctype, content))
}

/// The OCTET STRING of a data ContentInfo's `[0]`.
fn data_octets<'a>(content: Tlv<'a>) -> Result<Octets<'a>> {
    content.reader()?.expect_octets("data content")
}

/// AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters ANY OPTIONAL }
fn algorithm(alg: Tlv<'_>) -> Result<(&[u8], Option<Tlv<'_>>)> {
    let mut r = alg.reader()?;
    let oid = r.expect(OID, "algorithm")?.value;
    let params = (!r.is_empty()).then(|| r.read()).transpose()?;
    Ok((oid, params))
}

/// The localKeyId attribute's value, if any, in a SET OF Attribute.
fn local_key_id(attributes: Tlv<'_>) -> Result<LocalKeyId> {
    let mut r = attributes.reader()?;
    while !r.is_empty() {
        let mut a = r.expect(SEQUENCE, "attribute")?.reader()?;
        if a.expect(OID, "attribute type")?.value == OID_LOCAL_KEY_ID {
            let mut values = a.expect(SET, "attribute values")?.reader()?;
            return Ok(Some(values.expect_octets("localKeyId")?.to_vec()));
        }
    }
    Ok(None)
}

/// A PrivateKeyInfo: SEQUENCE { INTEGER version, AlgorithmIdentifier, OCTET STRING, ... } in
/// DER filling `der` exactly.
fn is_pkcs8(der: &[u8], depth: u32) -> bool {
    let check = || -> Result<bool> {
        let mut r = Reader::new(der, depth);
        let seq = r.expect(SEQUENCE, "PrivateKeyInfo")?;
        if !r.is_empty() || seq.indefinite {
            return Ok(false);
        }
        let mut k = seq.reader()?;
        let version = k.expect(INTEGER, "version")?.uint()?;
        let alg = k.expect(SEQUENCE, "key algorithm")?;
        algorithm(alg)?;
        Ok(version <= 1 && k.expect(OCTET_STRING, "key")?.value.len() > 1)
    };
    check().unwrap_or(false)
}

// ---- Cryptography -----------------------------------------------------------------------------

fn key_init<C: KeyInit>(key: &[u8]) -> Result<C> {
    C::new_from_slice(key).map_err(|_| Pkcs12Error::Malformed("key length"))
}

/// CBC decryption with PKCS#7 padding into a zeroizing buffer.
fn cbc_decrypt<C: BlockCipherDecrypt>(cipher: C, iv: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let decryptor = cbc::Decryptor::<C>::inner_iv_slice_init(cipher, iv)
        .map_err(|_| Pkcs12Error::Malformed("IV length does not match the cipher"))?;
    let mut buf = Zeroizing::new(data.to_vec());
    let len = decryptor
        .decrypt_padded::<Pkcs7>(&mut buf)
        .map_err(|_| Pkcs12Error::Decrypt("bad padding"))?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// A password as the PKCS#12 key derivation takes it: UTF-16BE, NUL-terminated.
fn bmp(password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * password.len() + 2);
    for unit in password.encode_utf16().chain([0]) {
        out.extend_from_slice(&unit.to_be_bytes());
    }
    out
}

/// RFC 7292 appendix B.2: `n` bytes of key material of purpose `id` (1 key, 2 IV, 3 MAC key).
fn pkcs12_kdf(
    md: &'static digest::Algorithm,
    password: &[u8],
    salt: &[u8],
    id: u8,
    iterations: u64,
    n: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    if salt.len() > MAX_SALT || password.len() > MAX_SALT * 4 {
        return malformed("salt too long");
    }
    let (u, v) = (md.output_len(), md.block_len());
    let mut i = Zeroizing::new(Vec::new());
    for src in [salt, password] {
        if !src.is_empty() {
            let len = v * src.len().div_ceil(v);
            i.extend((0..len).map(|k| src[k % src.len()]));
        }
    }
    let d = vec![id; v];
    let mut out = Zeroizing::new(Vec::with_capacity(n));
    loop {
        let mut ctx = digest::Context::new(md);
        ctx.update(&d);
        ctx.update(&i);
        let mut a = ctx.finish();
        for _ in 1..iterations {
            a = digest::digest(md, a.as_ref());
        }
        let a = a.as_ref();
        let take = (n - out.len()).min(u);
        out.extend_from_slice(&a[..take]);
        if out.len() == n {
            return Ok(out);
        }
        // I_j = (I_j + B + 1) mod 2^(8v), B = A repeated to v bytes.
        let b = Zeroizing::new((0..v).map(|k| a[k % u]).collect::<Vec<u8>>());
        for block in i.chunks_mut(v) {
            let mut carry = 1u16;
            for k in (0..v).rev() {
                let sum = u16::from(block[k]) + u16::from(b[k]) + carry;
                block[k] = sum as u8;
                carry = sum >> 8;
            }
        }
    }
}

// ---- TLV reader -------------------------------------------------------------------------------

const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const CONSTRUCTED: u8 = 0x20;
const CONTEXT: u8 = 0x80;

/// Bytes of an OCTET STRING: borrowed, or gathered from a constructed (BER) one.
enum Octets<'a> {
    Borrowed(&'a [u8]),
    Owned(Zeroizing<Vec<u8>>),
}

impl Deref for Octets<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Octets::Borrowed(b) => b,
            Octets::Owned(v) => v,
        }
    }
}

/// One element: its tag, its contents (for an indefinite length, without the end-of-contents
/// marker) and its whole encoding.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
    raw: &'a [u8],
    indefinite: bool,
    depth: u32,
}

impl<'a> Tlv<'a> {
    fn reader(&self) -> Result<Reader<'a>> {
        if self.tag & CONSTRUCTED == 0 {
            return malformed("expected a constructed element");
        }
        if self.depth >= MAX_DEPTH {
            return malformed("nested too deeply");
        }
        Ok(Reader::new(self.value, self.depth + 1))
    }

    /// A non-negative INTEGER up to 2^63.
    fn uint(&self) -> Result<u64> {
        let v = self.value;
        if self.tag != INTEGER || v.is_empty() || v[0] & 0x80 != 0 {
            return malformed("expected a non-negative INTEGER");
        }
        let v = if v.len() > 1 && v[0] == 0 { &v[1..] } else { v };
        if v.len() > 8 {
            return malformed("INTEGER too large");
        }
        Ok(v.iter().fold(0, |n, &b| (n << 8) | u64::from(b)))
    }

    /// The bytes of a primitive or constructed string.
    fn octets(&self) -> Result<Octets<'a>> {
        if self.tag & CONSTRUCTED == 0 {
            return Ok(Octets::Borrowed(self.value));
        }
        let mut out = Zeroizing::new(Vec::new());
        self.gather(&mut out)?;
        Ok(Octets::Owned(out))
    }

    fn gather(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut r = self.reader()?;
        while !r.is_empty() {
            let piece = r.read()?;
            match piece.tag {
                OCTET_STRING => out.extend_from_slice(piece.value),
                t if t == OCTET_STRING | CONSTRUCTED => piece.gather(out)?,
                _ => return malformed("constructed OCTET STRING"),
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Reader<'a> {
    buf: &'a [u8],
    depth: u32,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], depth: u32) -> Self {
        Self { buf, depth }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn read(&mut self) -> Result<Tlv<'a>> {
        const TRUNCATED: Pkcs12Error = Pkcs12Error::Malformed("truncated");
        let buf = self.buf;
        let (&tag, rest) = buf.split_first().ok_or(TRUNCATED)?;
        if tag & 0x1f == 0x1f {
            return malformed("high tag number");
        }
        let (&first, rest) = rest.split_first().ok_or(TRUNCATED)?;
        let (header, len, indefinite) = match first {
            0..=0x7f => (2, usize::from(first), false),
            0x80 => {
                if tag & CONSTRUCTED == 0 {
                    return malformed("indefinite length on a primitive element");
                }
                if self.depth >= MAX_DEPTH {
                    return malformed("nested too deeply");
                }
                (2, indefinite_len(rest, self.depth + 1)?, true)
            }
            0x81..=0x84 => {
                let k = usize::from(first & 0x7f);
                let bytes = rest.get(..k).ok_or(TRUNCATED)?;
                let len = bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
                (2 + k, len, false)
            }
            _ => return malformed("length too large"),
        };
        let end = header
            .checked_add(len)
            .filter(|&end| end <= buf.len())
            .ok_or(TRUNCATED)?;
        let value = &buf[header..end];
        let consumed = if indefinite { end + 2 } else { end };
        self.buf = &buf[consumed..];
        Ok(Tlv {
            tag,
            value,
            raw: &buf[..consumed],
            indefinite,
            depth: self.depth,
        })
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<Tlv<'a>> {
        let tlv = self.read().map_err(|e| match e {
            Pkcs12Error::Malformed("truncated") => Pkcs12Error::Expected(what),
            e => e,
        })?;
        if tlv.tag != tag {
            return Err(Pkcs12Error::Expected(what));
        }
        Ok(tlv)
    }

    fn expect_octets(&mut self, what: &'static str) -> Result<Octets<'a>> {
        let tlv = self.read()?;
        if tlv.tag & !CONSTRUCTED != OCTET_STRING {
            return Err(Pkcs12Error::Expected(what));
        }
        tlv.octets()
    }
}

/// The length of the contents of an indefinite-length element starting at `buf`, up to (not
/// including) its end-of-contents marker.
fn indefinite_len(buf: &[u8], depth: u32) -> Result<usize> {
    let mut r = Reader::new(buf, depth);
    loop {
        if r.buf.starts_with(&[0, 0]) {
            return Ok(buf.len() - r.buf.len());
        }
        r.read()?;
    }
}

// ---- Object identifiers (DER contents) --------------------------------------------------------

const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const OID_ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
const OID_ENCRYPTED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];
const OID_KEY_BAG: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x01];
const OID_SHROUDED_KEY_BAG: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02];
const OID_CERT_BAG: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03];
const OID_SAFE_CONTENTS_BAG: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x06];
const OID_X509_CERT: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
const OID_LOCAL_KEY_ID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x15];
/// 1.2.840.113549.1.12.1: pkcs-12PbeIds, followed by one byte.
const OID_PKCS12_PBE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01];
const OID_PBKDF2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
const OID_PBES2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
const OID_PBMAC1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0e];
const OID_HMAC_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x07];
const OID_HMAC_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09];
const OID_HMAC_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x0a];
const OID_HMAC_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x0b];
const OID_DES_EDE3_CBC: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x07];
const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
const OID_AES128_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02];
const OID_AES192_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x16];
const OID_AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];

/// A name for an OID in messages: the known PKCS#12 names, else the dotted form.
fn oid_name(oid: &[u8]) -> String {
    if let Some(&[id]) = oid.strip_prefix(OID_PKCS12_PBE) {
        let name = match id {
            1 => Some("pbeWithSHAAnd128BitRC4"),
            2 => Some("pbeWithSHAAnd40BitRC4"),
            _ => None,
        };
        if let Some(name) = name {
            return name.to_owned();
        }
    }
    let mut arcs = Vec::new();
    let mut n: u64 = 0;
    for &b in oid.iter().take(64) {
        n = (n << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (n / 40).min(2);
                arcs.push(first);
                arcs.push(n - 40 * first);
            } else {
                arcs.push(n);
            }
            n = 0;
        }
        if n > u64::MAX >> 8 {
            return "(invalid OID)".to_owned();
        }
    }
    let dotted: Vec<String> = arcs.iter().map(u64::to_string).collect();
    format!("OID {}", dotted.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    const PW: &str = "test-password";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/pkcs12/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Decodes `file` and checks it against what openssl exported.
    fn check(file: &str, password: &str, certs: &[&str], key: &str) {
        let id = decode(&fixture(file), password).unwrap_or_else(|e| panic!("{file}: {e}"));
        let expected: Vec<Vec<u8>> = certs.iter().map(|c| fixture(c)).collect();
        assert!(
            id.certificates == expected,
            "{file}: certificates differ (or their order)"
        );
        assert!(
            id.private_key.expose_secret() == fixture(key).as_slice(),
            "{file}: key differs"
        );
    }

    #[test]
    fn openssl3_default_aes256_pbkdf2_sha256_mac() {
        check("modern-rsa.p12", PW, &["leaf-rsa.der"], "key-rsa.der");
    }

    #[test]
    fn chain_leaf_first_then_intermediate() {
        check(
            "chain-ec.p12",
            PW,
            &["leaf-ec.der", "intermediate.der"],
            "key-ec.der",
        );
    }

    #[test]
    fn legacy_3des_with_sha1_mac() {
        check("legacy-3des.p12", PW, &["leaf-rsa.der"], "key-rsa.der");
    }

    #[test]
    fn legacy_rc2_40_certificates_openssl1_default() {
        check("legacy-rc2-40.p12", PW, &["leaf-ec.der"], "key-ec.der");
    }

    #[test]
    fn legacy_rc2_128_certificates_and_2key_3des_key() {
        check("legacy-rc2-128.p12", PW, &["leaf-ec.der"], "key-ec.der");
    }

    #[test]
    fn empty_password() {
        check("nopass.p12", "", &["leaf-ec.der"], "key-ec.der");
    }

    #[test]
    fn plain_key_bag_without_mac() {
        check("plain-nomac.p12", "", &["leaf-rsa.der"], "key-rsa.der");
        // No MAC and no encryption: any password opens it.
        check("plain-nomac.p12", "whatever", &["leaf-rsa.der"], "key-rsa.der");
    }

    #[test]
    fn sha512_mac_with_aes128_and_aes192() {
        check("mac-sha512.p12", PW, &["leaf-ec.der"], "key-ec.der");
    }

    #[test]
    fn sha384_mac_with_pbes2_3des() {
        check("mac-sha384-3des.p12", PW, &["leaf-rsa.der"], "key-rsa.der");
    }

    #[test]
    fn non_ascii_password() {
        check(
            "unicode-password.p12",
            "pässwörd-€",
            &["leaf-ec.der"],
            "key-ec.der",
        );
    }

    #[test]
    fn pbkdf2_with_hmac_sha1_default_prf() {
        let der = fixture("key-ec-pbkdf2-sha1.p8");
        let mut r = Reader::new(&der, 0);
        let value = r.read().unwrap();
        let mut d = decoder("test-password");
        let key = d.shrouded_key(value).unwrap();
        assert!(key.as_slice() == fixture("key-ec.der").as_slice());
        let mut d = decoder("wrong");
        assert!(matches!(d.shrouded_key(value), Err(Pkcs12Error::Decrypt(_))));
    }

    fn decoder(password: &str) -> Decoder<'_> {
        Decoder {
            password,
            bmp_password: Zeroizing::new(bmp(password)),
            budget: MAX_TOTAL_ITERATIONS,
            derived: 0,
            bags: 0,
            keys: vec![],
            certs: vec![],
        }
    }

    #[test]
    fn wrong_password_is_a_mac_error() {
        for file in [
            "modern-rsa.p12",
            "chain-ec.p12",
            "legacy-3des.p12",
            "legacy-rc2-40.p12",
            "mac-sha512.p12",
            "mac-sha384-3des.p12",
            "unicode-password.p12",
        ] {
            assert_eq!(
                decode(&fixture(file), "wrong").unwrap_err(),
                Pkcs12Error::Mac,
                "{file}"
            );
            assert_eq!(
                decode(&fixture(file), "").unwrap_err(),
                Pkcs12Error::Mac,
                "{file}"
            );
        }
        assert_eq!(decode(&fixture("nopass.p12"), PW).unwrap_err(), Pkcs12Error::Mac);
        // NFC vs NFD or a Latin-1 guess must not open it.
        assert_eq!(
            decode(&fixture("unicode-password.p12"), "passwort-€").unwrap_err(),
            Pkcs12Error::Mac
        );
    }

    #[test]
    fn debug_shows_no_key() {
        let id = decode(&fixture("chain-ec.p12"), PW).unwrap();
        let shown = format!("{id:?}");
        assert_eq!(
            shown,
            r#"Identity { certificates: 2, private_key: "[redacted]" }"#
        );
    }

    #[test]
    fn pkcs12_kdf_matches_rfc7292_vectors() {
        // From the test vectors published with OpenSSL and BouncyCastle: password "smeg",
        // salt 0A58CF64530D823F, 1 iteration, SHA-1.
        let pw = bmp("smeg");
        let salt = [0x0a, 0x58, 0xcf, 0x64, 0x53, 0x0d, 0x82, 0x3f];
        let sha1 = &digest::SHA1_FOR_LEGACY_USE_ONLY;
        let key = pkcs12_kdf(sha1, &pw, &salt, 1, 1, 24).unwrap();
        assert_eq!(hex(&key), "8aaae6297b6cb04642ab5b077851284eb7128f1a2a7fbca3");
        let iv = pkcs12_kdf(sha1, &pw, &salt, 2, 1, 8).unwrap();
        assert_eq!(hex(&iv), "79993dfe048d3b76");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    // ---- Hostile input --------------------------------------------------------------------------

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = content.len();
        match n {
            0..=0x7f => out.push(n as u8),
            0x80..=0xff => out.extend([0x81, n as u8]),
            _ => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    fn seq(parts: &[&[u8]]) -> Vec<u8> {
        tlv(SEQUENCE, &parts.concat())
    }

    /// A PFX around `auth_safe` (the AuthenticatedSafe DER) with an optional MacData.
    fn pfx(auth_safe: &[u8], mac: Option<&[u8]>) -> Vec<u8> {
        let content = seq(&[&tlv(OID, OID_DATA), &tlv(0xa0, &tlv(OCTET_STRING, auth_safe))]);
        seq(&[&tlv(INTEGER, &[3]), &content, mac.unwrap_or_default()])
    }

    #[test]
    fn every_truncation_is_an_error() {
        for file in ["modern-rsa.p12", "legacy-rc2-40.p12"] {
            let der = fixture(file);
            for len in 0..der.len() {
                assert!(decode(&der[..len], PW).is_err(), "{file} cut at {len}");
            }
        }
    }

    #[test]
    fn every_single_byte_corruption_is_handled() {
        let der = fixture("nopass.p12");
        let good = decode(&der, "").unwrap();
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0x55;
            // An error, or (a byte outside what the MAC covers, e.g. in a tag the reader does
            // not check) the same identity; never a panic.
            if let Ok(id) = decode(&bad, "") {
                assert!(id.certificates == good.certificates, "byte {i}");
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let mut rng = fastrand::Rng::with_seed(12);
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x30],
            vec![0x30, 0x80],
            vec![0x30, 0x80, 0x00],
            vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            vec![0x30, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            vec![0x3f, 0x81, 0x01, 0x00],
            b"-----BEGIN CERTIFICATE-----".to_vec(),
            vec![0; 4096],
            vec![0xff; 4096],
            [0x30, 0x80].repeat(100_000),
            [0x24, 0x80].repeat(100_000),
            [0x30, 0x84, 0x00, 0x10, 0x00, 0x00].repeat(50_000),
            vec![0; MAX_INPUT + 1],
            pfx(&[0x30, 0x00], None)
                .iter()
                .chain(&[0x30, 0x80])
                .copied()
                .collect(),
            pfx(&seq(&[]), Some(&[])).into_iter().take(6).collect(),
        ];
        for _ in 0..2000 {
            let n = rng.usize(0..300);
            cases.push((0..n).map(|_| rng.u8(..)).collect());
            let mut v = vec![0x30, 0x82, 0x01, 0x00, 0x02, 0x01, 0x03];
            v.extend((0..n).map(|_| rng.u8(..)));
            cases.push(v);
        }
        for case in &cases {
            assert!(decode(case, PW).is_err(), "{:02x?}", &case[..case.len().min(16)]);
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // 5,000 nested definite SEQUENCEs as the AuthenticatedSafe, and safeContentsBags nested
        // past the limit.
        let mut deep = seq(&[]);
        for _ in 0..5_000 {
            deep = seq(&[&deep]);
        }
        assert!(decode(&pfx(&deep, None), "").is_err());
        let mut bag = seq(&[]);
        for _ in 0..100 {
            let wrapped = seq(&[&tlv(OID, OID_SAFE_CONTENTS_BAG), &tlv(0xa0, &seq(&[&bag]))]);
            bag = wrapped;
        }
        let data = seq(&[&tlv(OID, OID_DATA), &tlv(0xa0, &tlv(OCTET_STRING, &seq(&[&bag])))]);
        assert_eq!(
            decode(&pfx(&seq(&[&data]), None), "").unwrap_err(),
            Pkcs12Error::Malformed("nested too deeply")
        );
        // Nested constructed OCTET STRINGs.
        let mut octets = tlv(OCTET_STRING, b"x");
        for _ in 0..1000 {
            octets = tlv(OCTET_STRING | CONSTRUCTED, &octets);
        }
        let content = seq(&[&tlv(OID, OID_DATA), &tlv(0xa0, &octets)]);
        assert!(decode(&seq(&[&tlv(INTEGER, &[3]), &content]), "").is_err());
    }

    #[test]
    fn huge_iteration_counts_are_refused_quickly() {
        let start = std::time::Instant::now();
        let mac = |iterations: &[u8]| {
            let digest_info = seq(&[
                &seq(&[&tlv(OID, OID_SHA256), &tlv(0x05, &[])]),
                &tlv(OCTET_STRING, &[0; 32]),
            ]);
            seq(&[
                &digest_info,
                &tlv(OCTET_STRING, &[1; 8]),
                &tlv(INTEGER, iterations),
            ])
        };
        let auth = seq(&[]);
        assert_eq!(
            decode(&pfx(&auth, Some(&mac(&[0x7f, 0xff, 0xff, 0xff]))), "").unwrap_err(),
            Pkcs12Error::TooCostly(0x7fff_ffff)
        );
        assert_eq!(
            decode(&pfx(&auth, Some(&mac(&[0x00, 0x98, 0x96, 0x81]))), "").unwrap_err(),
            Pkcs12Error::TooCostly(10_000_001)
        );
        assert!(matches!(
            decode(&pfx(&auth, Some(&mac(&[0x00]))), "").unwrap_err(),
            Pkcs12Error::Malformed(_)
        ));
        assert!(matches!(
            decode(&pfx(&auth, Some(&mac(&[0xff]))), "").unwrap_err(),
            Pkcs12Error::Malformed(_)
        ));
        // The same in a PBES2 key derivation and a PKCS#12 PBE.
        let pbes2 = seq(&[
            &tlv(OID, OID_PBES2),
            &seq(&[
                &seq(&[
                    &tlv(OID, OID_PBKDF2),
                    &seq(&[
                        &tlv(OCTET_STRING, &[1; 8]),
                        &tlv(INTEGER, &[0x7f, 0xff, 0xff, 0xff]),
                    ]),
                ]),
                &seq(&[&tlv(OID, OID_AES256_CBC), &tlv(OCTET_STRING, &[0; 16])]),
            ]),
        ]);
        let pbe = seq(&[
            &tlv(OID, &[OID_PKCS12_PBE, &[3]].concat()),
            &seq(&[
                &tlv(OCTET_STRING, &[1; 8]),
                &tlv(INTEGER, &[0x7f, 0xff, 0xff, 0xff]),
            ]),
        ]);
        for alg in [pbes2, pbe] {
            let encrypted = seq(&[
                &tlv(INTEGER, &[0]),
                &seq(&[&tlv(OID, OID_DATA), &alg, &tlv(0x80, &[0; 32])]),
            ]);
            let info = seq(&[&tlv(OID, OID_ENCRYPTED_DATA), &tlv(0xa0, &encrypted)]);
            assert_eq!(
                decode(&pfx(&seq(&[&info]), None), "").unwrap_err(),
                Pkcs12Error::TooCostly(0x7fff_ffff)
            );
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn unsupported_algorithms_are_named() {
        let rc4 = seq(&[
            &tlv(OID, &[OID_PKCS12_PBE, &[1]].concat()),
            &seq(&[&tlv(OCTET_STRING, &[1; 8]), &tlv(INTEGER, &[1])]),
        ]);
        let encrypted = seq(&[
            &tlv(INTEGER, &[0]),
            &seq(&[&tlv(OID, OID_DATA), &rc4, &tlv(0x80, &[0; 32])]),
        ]);
        let info = seq(&[&tlv(OID, OID_ENCRYPTED_DATA), &tlv(0xa0, &encrypted)]);
        let e = decode(&pfx(&seq(&[&info]), None), "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported encryption algorithm: pbeWithSHAAnd128BitRC4"
        );
        let enveloped = seq(&[&tlv(OID, OID_ENVELOPED_DATA), &tlv(0xa0, &seq(&[]))]);
        let e = decode(&pfx(&seq(&[&enveloped]), None), "").unwrap_err();
        assert!(e.to_string().contains("envelopedData"), "{e}");
        assert_eq!(oid_name(OID_SHA256), "OID 2.16.840.1.101.3.4.2.1");
        assert_eq!(oid_name(OID_SHA1), "OID 1.3.14.3.2.26");
    }

    /// A SafeBag of type `oid` around `value`, with a localKeyId attribute if `id` is given.
    fn bag(oid: &[u8], value: &[u8], id: Option<u8>) -> Vec<u8> {
        let attrs = id.map(|id| {
            let attr = seq(&[&tlv(OID, OID_LOCAL_KEY_ID), &tlv(SET, &tlv(OCTET_STRING, &[id]))]);
            tlv(SET, &attr)
        });
        seq(&[&tlv(OID, oid), &tlv(0xa0, value), &attrs.unwrap_or_default()])
    }

    fn cert_bag(file: &str, id: Option<u8>) -> Vec<u8> {
        let value = seq(&[
            &tlv(OID, OID_X509_CERT),
            &tlv(0xa0, &tlv(OCTET_STRING, &fixture(file))),
        ]);
        bag(OID_CERT_BAG, &value, id)
    }

    fn key_bag(id: Option<u8>) -> Vec<u8> {
        bag(OID_KEY_BAG, &fixture("key-ec.der"), id)
    }

    /// An unencrypted PFX without MAC holding `bags` in one data content.
    fn plain(bags: &[Vec<u8>]) -> Vec<u8> {
        let contents = seq(&bags.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let data = seq(&[&tlv(OID, OID_DATA), &tlv(0xa0, &tlv(OCTET_STRING, &contents))]);
        pfx(&seq(&[&data]), None)
    }

    #[test]
    fn the_keys_certificate_comes_first_whatever_the_order() {
        let cases = [
            // Windows order: CA certificates first, the leaf with the key's localKeyId.
            vec![
                cert_bag("intermediate.der", None),
                cert_bag("leaf-ec.der", Some(1)),
                key_bag(Some(1)),
            ],
            vec![
                key_bag(Some(1)),
                cert_bag("intermediate.der", Some(2)),
                cert_bag("leaf-ec.der", Some(1)),
            ],
            // The key has no localKeyId: the only certificate that has one.
            vec![
                cert_bag("intermediate.der", None),
                cert_bag("leaf-ec.der", Some(7)),
                key_bag(None),
            ],
            // No localKeyId at all: the first certificate.
            vec![
                cert_bag("leaf-ec.der", None),
                cert_bag("intermediate.der", None),
                key_bag(None),
            ],
        ];
        let expected = [fixture("leaf-ec.der"), fixture("intermediate.der")];
        for (i, bags) in cases.iter().enumerate() {
            let id = decode(&plain(bags), "").unwrap_or_else(|e| panic!("case {i}: {e}"));
            assert!(id.certificates == expected, "case {i}");
            assert!(id.private_key.expose_secret() == fixture("key-ec.der").as_slice());
        }
    }

    #[test]
    fn not_one_key_with_a_certificate_is_a_content_error() {
        let content = |bags: &[Vec<u8>]| match decode(&plain(bags), "") {
            Err(Pkcs12Error::Content(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(content(&[]), "it holds no private key");
        assert_eq!(content(&[key_bag(None)]), "it holds no X.509 certificate");
        assert_eq!(
            content(&[cert_bag("leaf-ec.der", None), key_bag(None), key_bag(None)]),
            "it holds 2 private keys; ps-agent needs exactly one"
        );
        assert_eq!(
            content(&[
                cert_bag("leaf-ec.der", Some(2)),
                cert_bag("intermediate.der", Some(3)),
                key_bag(Some(1))
            ]),
            "no certificate has the private key's localKeyId"
        );
        let garbage = bag(OID_KEY_BAG, &seq(&[&tlv(INTEGER, &[0])]), None);
        assert_eq!(
            decode(&plain(&[garbage]), "").unwrap_err(),
            Pkcs12Error::Malformed("keyBag is not a PKCS#8 private key")
        );
    }

    /// Re-encodes the outer layers of a DER file the way Windows writes BER: every constructed
    /// element with an indefinite length, every OCTET STRING in constructed 100-byte pieces.
    /// What OCTET STRINGs hold is left alone, so the MAC still verifies.
    fn to_ber(der: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut r = Reader::new(der, 0);
        while !r.is_empty() {
            let t = r.read().unwrap();
            if t.tag & CONSTRUCTED != 0 {
                out.extend([t.tag, 0x80]);
                out.extend(to_ber(t.value));
                out.extend([0, 0]);
            } else if t.tag == OCTET_STRING {
                out.extend([OCTET_STRING | CONSTRUCTED, 0x80]);
                for piece in t.value.chunks(100) {
                    out.extend(tlv(OCTET_STRING, piece));
                }
                out.extend([0, 0]);
            } else {
                out.extend_from_slice(t.raw);
            }
        }
        out
    }

    #[test]
    fn ber_indefinite_lengths_and_constructed_octet_strings() {
        let ber = to_ber(&fixture("modern-rsa.p12"));
        assert_eq!(&ber[..2], &[0x30, 0x80]);
        let id = decode(&ber, PW).unwrap();
        assert!(id.certificates == [fixture("leaf-rsa.der")]);
        assert_eq!(decode(&ber, "wrong").unwrap_err(), Pkcs12Error::Mac);
        for len in 0..ber.len() {
            assert!(decode(&ber[..len], PW).is_err(), "cut at {len}");
        }
    }

    /// Property tests: hostile files never panic, and the work and the output stay bounded by
    /// the limits above (counted, never timed). A fixed seed and case count keep CI's work the
    /// same on every run; `PROPTEST_CASES=<n>` runs more, `PROPTEST_RNG_SEED=<n>` others.
    mod props {
        use super::*;
        use proptest::prelude::*;

        fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
            std::env::var(name).ok().and_then(|v| v.parse().ok())
        }

        fn config() -> ProptestConfig {
            use proptest::test_runner::RngSeed;
            ProptestConfig {
                cases: env("PROPTEST_CASES").unwrap_or(128),
                failure_persistence: None,
                rng_seed: RngSeed::Fixed(env("PROPTEST_RNG_SEED").unwrap_or(0x5eed_7292)),
                ..ProptestConfig::default()
            }
        }

        /// The fixture without its MacData: mutations of the contents then reach decryption and
        /// the bags instead of stopping at the MAC.
        fn without_mac(der: &[u8]) -> Vec<u8> {
            let mut top = Reader::new(der, 0);
            let mut r = top.read().unwrap().reader().unwrap();
            let version = r.read().unwrap().raw;
            let auth_safe = r.read().unwrap().raw;
            seq(&[version, auth_safe])
        }

        /// Every fixture with the password that opens it, with and without its MAC.
        fn fixtures() -> Vec<(Vec<u8>, &'static str)> {
            let mut out = Vec::new();
            for (file, password) in [
                ("modern-rsa.p12", PW),
                ("chain-ec.p12", PW),
                ("legacy-3des.p12", PW),
                ("legacy-rc2-40.p12", PW),
                ("legacy-rc2-128.p12", PW),
                ("mac-sha512.p12", PW),
                ("mac-sha384-3des.p12", PW),
                ("unicode-password.p12", "pässwörd-€"),
                ("nopass.p12", ""),
                ("plain-nomac.p12", ""),
            ] {
                let der = fixture(file);
                out.push((without_mac(&der), password));
                out.push((der, password));
            }
            out
        }

        #[derive(Clone, Debug)]
        enum Mutation {
            Xor(prop::sample::Index, u8),
            Set(prop::sample::Index, u8),
            Insert(prop::sample::Index, u8),
            Remove(prop::sample::Index),
            Truncate(prop::sample::Index),
        }

        fn mutation() -> impl Strategy<Value = Mutation> {
            prop_oneof![
                (any::<prop::sample::Index>(), 1..=u8::MAX).prop_map(|(i, b)| Mutation::Xor(i, b)),
                (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
                (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
                any::<prop::sample::Index>().prop_map(Mutation::Remove),
                any::<prop::sample::Index>().prop_map(Mutation::Truncate),
            ]
        }

        fn mutate(mut der: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
            for m in mutations {
                let len = der.len();
                if len == 0 {
                    break;
                }
                match m {
                    Mutation::Xor(i, b) => der[i.index(len)] ^= b,
                    Mutation::Set(i, b) => der[i.index(len)] = *b,
                    Mutation::Insert(i, b) => der.insert(i.index(len + 1), *b),
                    Mutation::Remove(i) => {
                        der.remove(i.index(len));
                    }
                    Mutation::Truncate(i) => der.truncate(i.index(len)),
                }
            }
            der
        }

        /// The bounds every input must respect, whatever it decodes to.
        fn assert_bounded(der: &[u8], password: &str, result: &Result<Identity>, derived: u64) {
            assert!(
                derived <= MAX_TOTAL_ITERATIONS,
                "{derived} key-derivation iterations, over {MAX_TOTAL_ITERATIONS}"
            );
            match result {
                Ok(id) => {
                    // Everything returned was read from the file: the output cannot outgrow it.
                    let out: usize = id.certificates.iter().map(Vec::len).sum::<usize>()
                        + id.private_key.expose_secret().len();
                    assert!(!id.certificates.is_empty());
                    assert!(out <= der.len(), "{out} bytes out of a {}-byte file", der.len());
                }
                Err(e) if !password.is_empty() => {
                    assert!(
                        !e.to_string().contains(password),
                        "the error shows the password: {e}"
                    );
                }
                Err(_) => {}
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn arbitrary_bytes_never_panic(
                der in prop::collection::vec(any::<u8>(), 0..2048),
                password in prop::sample::select(vec!["", PW]),
            ) {
                let (result, derived) = decode_metered(&der, password);
                assert_bounded(&der, password, &result, derived);
            }

            #[test]
            fn mutated_fixtures_never_panic(
                fixture in prop::sample::select(fixtures()),
                mutations in prop::collection::vec(mutation(), 1..6),
            ) {
                let (der, password) = fixture;
                let der = mutate(der, &mutations);
                let (result, derived) = decode_metered(&der, password);
                assert_bounded(&der, password, &result, derived);
            }
        }

        #[test]
        fn the_fixtures_open_without_their_mac() {
            for (der, password) in fixtures() {
                let (result, derived) = decode_metered(&der, password);
                assert!(result.is_ok(), "{:?}", result.err());
                assert!(derived > 0 || password.is_empty());
                assert_bounded(&der, password, &result, derived);
            }
        }
    }
}
