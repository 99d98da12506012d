//! SRTP's two per-packet primitives, AES-128 counter mode and HMAC-SHA1, handed to
//! libsrtp in place of the ones it was built with.
//!
//! Every room is a peer connection of its own, so every packet is encrypted and
//! authenticated once per room: that is the one cost of the fan-out that grows with the
//! rooms and cannot be shared. Debian builds libsrtp2 on NSS, and its NSS primitives do
//! per packet what a cipher would do per key: AES-ICM destroys and creates a PKCS#11
//! context (with a fresh key schedule) at every IV, HMAC re-initialises its context for
//! every tag. Profiled at 5 rooms, `srtp_protect` was about a third of each room's CPU,
//! of which the AES and SHA-1 arithmetic itself was a third.
//!
//! libsrtp 2 lets a program replace the implementation behind a cipher or auth type id
//! (`srtp_replace_cipher_type`, `srtp_replace_auth_type`, declared in its public
//! `cipher.h` / `auth.h`), and runs a replacement through its known-answer and
//! round-trip self-tests before it takes it. [`install`] gives it AES-128-ICM on the
//! `aes` crate (a key schedule per key, counter blocks encrypted eight at a time with
//! AES-NI or ARMv8 AES where the CPU has them, constant-time software otherwise) and
//! HMAC-SHA1 on the `sha1` crate (the keyed inner and outer states computed once per key
//! and copied per tag). libsrtp keeps everything else — key derivation, rollover
//! counter, replay window, packet layout — and webrtcbin, which reaches libsrtp through
//! `srtpenc` / `srtpdec`, sees no difference on the wire (a test compares the bytes).
//!
//! libsrtp is found at run time (`dlopen("libsrtp2.so.1")`, the library the GStreamer
//! SRTP plugin links), so the build needs no libsrtp headers. When it cannot be found
//! or refuses a replacement, SRTP stays on libsrtp's own primitives and the agent says
//! so; `[media] srtp_primitives = false` keeps them on purpose.
//!
//! The replacement relies on libsrtp's internal tables (`srtp_cipher_type_t`,
//! `srtp_auth_type_t`) keeping the layout it was checked against, which libsrtp does not
//! promise across versions. It is installed only on the versions in [`TESTED_VERSIONS`]
//! (checked byte for byte by `tests/srtp_crypto.rs`); any other keeps libsrtp's own
//! primitives, with an info line saying which version was found.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};

use aes::Aes128;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use sha1::{Digest, Sha1};

/// libsrtp versions (major, minor) the replacement was checked on, byte for byte against
/// libsrtp's own primitives (`tests/srtp_crypto.rs`): 2.5 (Debian 12), 2.7 (Debian 13).
pub const TESTED_VERSIONS: [(u32, u32); 2] = [(2, 5), (2, 7)];

/// Whether `version` (libsrtp's `srtp_get_version()`: major << 24 | minor << 16 |
/// micro) is one the replacement was checked on.
pub fn version_tested(version: u32) -> bool {
    TESTED_VERSIONS.contains(&(version >> 24, (version >> 16) & 0xff))
}

fn version_string(version: u32) -> String {
    format!(
        "{}.{}.{}",
        version >> 24,
        (version >> 16) & 0xff,
        version & 0xffff
    )
}

/// Why libsrtp still uses its own primitives (or some of them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpCryptoError {
    #[error(
        "libsrtp {found} is not a version roomcast's AES-ICM and HMAC-SHA1 were checked on (2.5 and 2.7); libsrtp keeps its own"
    )]
    UntestedVersion { found: String },
    #[error(
        "this CPU has no AES instructions, where NSS's table-driven AES beats constant-time \
         software AES; libsrtp keeps its AES-ICM (HMAC-SHA1 replaced: {hmac})"
    )]
    NoAesInstructions { hmac: bool },
    #[error("libsrtp2.so.1 could not be loaded ({0}); install libsrtp2-1")]
    NotLoaded(String),
    #[error("libsrtp2.so.1 has no `{0}` (libsrtp older than 2.0?)")]
    MissingSymbol(&'static str),
    #[error("libsrtp's {what} returned status {status}")]
    Refused { what: &'static str, status: c_int },
}

/// Both primitives were replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed;

#[cfg(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64"))]
cpufeatures::new!(cpu_aes, "aes");

/// Whether the `aes` crate runs on AES instructions here: AES-NI on x86, the ARMv8
/// crypto extension on aarch64 (Pi 5, Jetson, RK3588; not the Pi 4's Cortex-A72) when
/// built with `--cfg aes_armv8`; never on 32-bit ARM.
pub fn aes_in_hardware() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    return cpu_aes::get();
    #[cfg(target_arch = "aarch64")]
    return cfg!(aes_armv8) && cpu_aes::get();
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    return false;
}

/// How many AES keys libsrtp has set through these primitives (its self-tests, then per
/// SRTP session its key derivation and session keys): shows that they are in use.
/// Counted per key, not per packet, to stay off the packet path.
pub fn aes_keys_set() -> u64 {
    AES_KEYS_SET.load(std::sync::atomic::Ordering::Relaxed)
}

static AES_KEYS_SET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// srtp_err_status_t values (srtp.h).
type Status = c_int;
const STATUS_OK: Status = 0;
const STATUS_BAD_PARAM: Status = 2;
const STATUS_CIPHER_FAIL: Status = 8;
const STATUS_AUTH_FAIL: Status = 7;
const STATUS_TERMINUS: Status = 6;

// Type ids (crypto_types.h).
const SRTP_AES_ICM_128: u32 = 1;
const SRTP_HMAC_SHA1: u32 = 3;

/// AES-128 key followed by the 14-byte SRTP salt (SRTP_AES_ICM_128_KEY_LEN_WSALT).
const ICM_KEY_WITH_SALT: usize = 30;
const AES_KEY: usize = 16;
const SHA1_LEN: usize = 20;
const SHA1_BLOCK: usize = 64;

// The structures of libsrtp 2's cipher.h and auth.h, field for field.
#[repr(C)]
struct CipherTestCase {
    key_length_octets: c_int,
    key: *const u8,
    idx: *mut u8,
    plaintext_length_octets: c_uint,
    plaintext: *const u8,
    ciphertext_length_octets: c_uint,
    ciphertext: *const u8,
    aad_length_octets: c_int,
    aad: *const u8,
    tag_length_octets: c_int,
    next_test_case: *const CipherTestCase,
}

#[repr(C)]
struct CipherType {
    alloc: unsafe extern "C" fn(*mut *mut Cipher, c_int, c_int) -> Status,
    dealloc: unsafe extern "C" fn(*mut Cipher) -> Status,
    init: unsafe extern "C" fn(*mut c_void, *const u8) -> Status,
    set_aad: Option<unsafe extern "C" fn(*mut c_void, *const u8, u32) -> Status>,
    encrypt: unsafe extern "C" fn(*mut c_void, *mut u8, *mut c_uint) -> Status,
    decrypt: unsafe extern "C" fn(*mut c_void, *mut u8, *mut c_uint) -> Status,
    set_iv: unsafe extern "C" fn(*mut c_void, *mut u8, c_int) -> Status,
    get_tag: Option<unsafe extern "C" fn(*mut c_void, *mut u8, *mut u32) -> Status>,
    description: *const c_char,
    test_data: *const CipherTestCase,
    id: u32,
}

#[repr(C)]
struct Cipher {
    kind: *const CipherType,
    state: *mut c_void,
    key_len: c_int,
    algorithm: c_int,
}

#[repr(C)]
struct AuthTestCase {
    key_length_octets: c_int,
    key: *const u8,
    data_length_octets: c_int,
    data: *const u8,
    tag_length_octets: c_int,
    tag: *const u8,
    next_test_case: *const AuthTestCase,
}

#[repr(C)]
struct AuthType {
    alloc: unsafe extern "C" fn(*mut *mut Auth, c_int, c_int) -> Status,
    dealloc: unsafe extern "C" fn(*mut Auth) -> Status,
    init: unsafe extern "C" fn(*mut c_void, *const u8, c_int) -> Status,
    compute: unsafe extern "C" fn(*mut c_void, *const u8, c_int, c_int, *mut u8) -> Status,
    update: unsafe extern "C" fn(*mut c_void, *const u8, c_int) -> Status,
    start: unsafe extern "C" fn(*mut c_void) -> Status,
    description: *const c_char,
    test_data: *const AuthTestCase,
    id: u32,
}

#[repr(C)]
struct Auth {
    kind: *const AuthType,
    state: *mut c_void,
    out_len: c_int,
    key_len: c_int,
    prefix_len: c_int,
}

/// A `static` holding raw pointers to other statics, never written: safe to share.
struct Shared<T>(T);
// SAFETY: the wrapped tables and test vectors are immutable for the life of the process
// and only point at other immutable statics.
unsafe impl<T> Sync for Shared<T> {}

// libsrtp's own AES-ICM known answer (from its cipher_test_cases.c): key || salt, a zero
// index, 32 zero bytes in.
static ICM_TEST_KEY: [u8; ICM_KEY_WITH_SALT] = [
    0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c,
    0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd,
];
static ICM_TEST_INDEX: [u8; 16] = [0; 16];
static ICM_TEST_PLAINTEXT: [u8; 32] = [0; 32];
static ICM_TEST_CIPHERTEXT: [u8; 32] = [
    0xe0, 0x3e, 0xad, 0x09, 0x35, 0xc9, 0x5e, 0x80, 0xe1, 0x66, 0xb1, 0x6d, 0xd9, 0x2b, 0x4e, 0xb4,
    0xd2, 0x35, 0x13, 0x16, 0x2b, 0x02, 0xd0, 0xf7, 0x2a, 0x43, 0xa2, 0xfe, 0x4a, 0x5f, 0x97, 0xab,
];
static ICM_TEST: Shared<CipherTestCase> = Shared(CipherTestCase {
    key_length_octets: ICM_KEY_WITH_SALT as c_int,
    key: ICM_TEST_KEY.as_ptr(),
    // libsrtp declares the index mutable; it only passes it to `set_iv`, which reads it.
    idx: ICM_TEST_INDEX.as_ptr().cast_mut(),
    plaintext_length_octets: 32,
    plaintext: ICM_TEST_PLAINTEXT.as_ptr(),
    ciphertext_length_octets: 32,
    ciphertext: ICM_TEST_CIPHERTEXT.as_ptr(),
    aad_length_octets: 0,
    aad: std::ptr::null(),
    tag_length_octets: 0,
    next_test_case: std::ptr::null(),
});

// RFC 2202 test case 1, as libsrtp's auth_test_cases.c has it.
static HMAC_TEST_KEY: [u8; 20] = [0x0b; 20];
static HMAC_TEST_DATA: [u8; 8] = *b"Hi There";
static HMAC_TEST_TAG: [u8; 20] = [
    0xb6, 0x17, 0x31, 0x86, 0x55, 0x05, 0x72, 0x64, 0xe2, 0x8b, 0xc0, 0xb6, 0xfb, 0x37, 0x8c, 0x8e,
    0xf1, 0x46, 0xbe, 0x00,
];
static HMAC_TEST: Shared<AuthTestCase> = Shared(AuthTestCase {
    key_length_octets: 20,
    key: HMAC_TEST_KEY.as_ptr(),
    data_length_octets: 8,
    data: HMAC_TEST_DATA.as_ptr(),
    tag_length_octets: 20,
    tag: HMAC_TEST_TAG.as_ptr(),
    next_test_case: std::ptr::null(),
});

static ICM_DESCRIPTION: &CStr = c"AES-128 counter mode (roomcast: aes crate)";
static HMAC_DESCRIPTION: &CStr = c"hmac sha-1 authentication function (roomcast: sha1 crate)";

static AES_ICM_128: Shared<CipherType> = Shared(CipherType {
    alloc: icm_alloc,
    dealloc: icm_dealloc,
    init: icm_init,
    set_aad: None,
    encrypt: icm_encrypt,
    decrypt: icm_encrypt,
    set_iv: icm_set_iv,
    get_tag: None,
    description: ICM_DESCRIPTION.as_ptr(),
    test_data: &ICM_TEST.0,
    id: SRTP_AES_ICM_128,
});

static HMAC_SHA1: Shared<AuthType> = Shared(AuthType {
    alloc: hmac_alloc,
    dealloc: hmac_dealloc,
    init: hmac_init,
    compute: hmac_compute,
    update: hmac_update,
    start: hmac_start,
    description: HMAC_DESCRIPTION.as_ptr(),
    test_data: &HMAC_TEST.0,
    id: SRTP_HMAC_SHA1,
});

/// Replaces libsrtp's AES-128-ICM and HMAC-SHA1 with these, process-wide, once (later
/// calls return the first outcome). Call before any SRTP session exists; sessions made
/// before keep what they have, so mixing is harmless but gains nothing.
pub fn install() -> Result<Installed, SrtpCryptoError> {
    static OUTCOME: std::sync::OnceLock<Result<Installed, SrtpCryptoError>> =
        std::sync::OnceLock::new();
    OUTCOME.get_or_init(install_once).clone()
}

fn install_once() -> Result<Installed, SrtpCryptoError> {
    // SAFETY: dlopen/dlsym/dlerror with NUL-terminated names; the handle is kept open for
    // the life of the process (libsrtp keeps pointers to our tables), and the symbols are
    // called with the signatures libsrtp 2 declares for them.
    unsafe {
        let handle = libc::dlopen(c"libsrtp2.so.1".as_ptr(), libc::RTLD_NOW);
        if handle.is_null() {
            let reason = libc::dlerror();
            let reason = if reason.is_null() {
                "unknown error".to_owned()
            } else {
                CStr::from_ptr(reason).to_string_lossy().into_owned()
            };
            return Err(SrtpCryptoError::NotLoaded(reason));
        }
        let symbol = |name: &'static CStr| {
            let found = libc::dlsym(handle, name.as_ptr());
            if found.is_null() {
                Err(SrtpCryptoError::MissingSymbol(
                    name.to_str().unwrap_or("symbol"),
                ))
            } else {
                Ok(found)
            }
        };
        let get_version: unsafe extern "C" fn() -> c_uint =
            std::mem::transmute(symbol(c"srtp_get_version")?);
        let version = get_version();
        if !version_tested(version) {
            return Err(SrtpCryptoError::UntestedVersion {
                found: version_string(version),
            });
        }
        // srtp_init() cannot be used to make sure: a second call fails on its debug
        // module. The kernel's own init is a no-op on an initialised kernel (it re-runs
        // the self-tests) and initialises one that is not, so that our types replace
        // loaded defaults rather than stand where the defaults will not load later.
        let kernel_init: unsafe extern "C" fn() -> Status =
            std::mem::transmute(symbol(c"srtp_crypto_kernel_init")?);
        let replace_cipher: unsafe extern "C" fn(*const CipherType, u32) -> Status =
            std::mem::transmute(symbol(c"srtp_replace_cipher_type")?);
        let replace_auth: unsafe extern "C" fn(*const AuthType, u32) -> Status =
            std::mem::transmute(symbol(c"srtp_replace_auth_type")?);
        let status = kernel_init();
        if status != STATUS_OK {
            return Err(SrtpCryptoError::Refused {
                what: "srtp_crypto_kernel_init",
                status,
            });
        }
        let status = replace_auth(&HMAC_SHA1.0, SRTP_HMAC_SHA1);
        let hmac = status == STATUS_OK;
        if !aes_in_hardware() {
            return Err(SrtpCryptoError::NoAesInstructions { hmac });
        }
        if !hmac {
            return Err(SrtpCryptoError::Refused {
                what: "HMAC-SHA1 self-test (srtp_replace_auth_type)",
                status,
            });
        }
        let status = replace_cipher(&AES_ICM_128.0, SRTP_AES_ICM_128);
        if status != STATUS_OK {
            return Err(SrtpCryptoError::Refused {
                what: "AES-128-ICM self-test (srtp_replace_cipher_type)",
                status,
            });
        }
    }
    Ok(Installed)
}

/// AES-128 in SRTP's integer counter mode (RFC 3711 4.1.1): the counter block is the
/// salt XOR the IV, its last 16 bits counting blocks; the keystream continues across
/// `encrypt` calls until the next IV, as libsrtp's other back ends do.
pub(crate) struct Icm {
    aes: Option<Aes128>,
    /// Salt, padded with two zero bytes.
    offset: [u8; 16],
    counter: Counter,
    keystream: [u8; 16],
    /// Bytes of `keystream` already used (16: none left).
    used: usize,
}

struct Counter {
    /// The counter block as a big-endian number: its low 16 bits are the block counter.
    /// (Whole-word arithmetic: byte-wise updates of a copied block stalled on store
    /// forwarding, a tenth of the cipher's time.)
    block: u128,
    /// Blocks of keystream this IV has left: the 16-bit block counter must not come
    /// round to a block already used.
    blocks_left: u32,
}

impl Counter {
    fn start(block: [u8; 16]) -> Self {
        Self {
            block: u128::from_be_bytes(block),
            blocks_left: BLOCKS_PER_IV,
        }
    }

    /// The next counter block; `None` once the 16-bit block counter has come round.
    fn next(&mut self) -> Option<[u8; 16]> {
        self.blocks_left = self.blocks_left.checked_sub(1)?;
        let block = self.block;
        let low = (block as u16).wrapping_add(1);
        self.block = (block & !0xffff) | u128::from(low);
        Some(block.to_be_bytes())
    }
}

/// Blocks of keystream per IV.
const BLOCKS_PER_IV: u32 = 1 << 16;

impl Icm {
    pub(crate) fn new() -> Self {
        Self {
            aes: None,
            offset: [0; 16],
            counter: Counter::start([0; 16]),
            keystream: [0; 16],
            used: 16,
        }
    }

    /// `key_with_salt`: the 16-byte key then the 14-byte salt.
    pub(crate) fn set_key(&mut self, key_with_salt: &[u8; ICM_KEY_WITH_SALT]) {
        self.aes = Some(Aes128::new(GenericArray::from_slice(
            &key_with_salt[..AES_KEY],
        )));
        self.offset = [0; 16];
        self.offset[..14].copy_from_slice(&key_with_salt[AES_KEY..]);
        self.counter = Counter::start(self.offset);
        self.used = 16;
    }

    pub(crate) fn set_iv(&mut self, iv: &[u8; 16]) {
        let block: [u8; 16] = std::array::from_fn(|i| self.offset[i] ^ iv[i]);
        self.counter = Counter::start(block);
        self.used = 16;
    }

    /// XORs the keystream into `data` in place. `false` without a key, or when the data
    /// would need more than 2^16 blocks of keystream for one IV (SRTP packets need ~80).
    pub(crate) fn apply(&mut self, mut data: &mut [u8]) -> bool {
        let Some(aes) = &self.aes else {
            return false;
        };
        // What is left of the last block.
        while self.used < 16 && !data.is_empty() {
            data[0] ^= self.keystream[self.used];
            self.used += 1;
            data = &mut data[1..];
        }
        // Whole blocks, eight at a time (AES-NI pipelines them).
        const BATCH: usize = 8;
        let mut blocks = [GenericArray::default(); BATCH];
        while data.len() >= 16 {
            let n = (data.len() / 16).min(BATCH);
            for block in blocks.iter_mut().take(n) {
                let Some(counter) = self.counter.next() else {
                    return false;
                };
                *block = GenericArray::from(counter);
            }
            aes.encrypt_blocks(&mut blocks[..n]);
            let (head, rest) = std::mem::take(&mut data).split_at_mut(n * 16);
            for (chunk, block) in head.chunks_exact_mut(16).zip(&blocks) {
                // A block at a time, not byte by byte (the release build optimises for
                // size and would not vectorise the byte loop).
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(chunk);
                let keystream: [u8; 16] = (*block).into();
                let xored = u128::from_ne_bytes(bytes) ^ u128::from_ne_bytes(keystream);
                chunk.copy_from_slice(&xored.to_ne_bytes());
            }
            data = rest;
        }
        // The tail: one more block, the rest kept for the next call.
        if !data.is_empty() {
            let Some(counter) = self.counter.next() else {
                return false;
            };
            let mut block = GenericArray::from(counter);
            aes.encrypt_block(&mut block);
            self.keystream.copy_from_slice(&block);
            self.used = 0;
            for byte in data.iter_mut() {
                *byte ^= self.keystream[self.used];
                self.used += 1;
            }
        }
        true
    }
}

/// HMAC-SHA1 (RFC 2104) with the keyed inner and outer states kept per key.
pub(crate) struct HmacSha1 {
    inner: Sha1,
    outer: Sha1,
    running: Sha1,
    /// `running` is still `inner`: libsrtp starts every packet, and `finish` has just
    /// started the next one, so `start` need not copy the state a second time.
    fresh: bool,
}

impl HmacSha1 {
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut block = [0u8; SHA1_BLOCK];
        if key.len() > SHA1_BLOCK {
            block[..SHA1_LEN].copy_from_slice(&Sha1::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| Sha1::new_with_prefix(block.map(|b| b ^ byte));
        let inner = pad(0x36);
        let outer = pad(0x5c);
        Self {
            running: inner.clone(),
            inner,
            outer,
            fresh: true,
        }
    }

    pub(crate) fn start(&mut self) {
        if !self.fresh {
            self.running = self.inner.clone();
            self.fresh = true;
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.running.update(data);
        self.fresh = false;
    }

    /// The tag over everything since [`HmacSha1::start`], and a fresh start.
    pub(crate) fn finish(&mut self) -> [u8; SHA1_LEN] {
        let running = std::mem::replace(&mut self.running, self.inner.clone());
        self.fresh = true;
        let mut outer = self.outer.clone();
        outer.update(running.finalize());
        outer.finalize().into()
    }
}

// The libsrtp side: C entry points over the two types above. None of them can unwind:
// no indexing that can fail, every pointer checked.

unsafe extern "C" fn icm_alloc(out: *mut *mut Cipher, key_len: c_int, _tag_len: c_int) -> Status {
    if out.is_null() {
        return STATUS_BAD_PARAM;
    }
    if key_len != ICM_KEY_WITH_SALT as c_int {
        return STATUS_BAD_PARAM;
    }
    let state = Box::into_raw(Box::new(Icm::new())).cast::<c_void>();
    let cipher = Box::new(Cipher {
        kind: &AES_ICM_128.0,
        state,
        key_len,
        algorithm: SRTP_AES_ICM_128 as c_int,
    });
    // SAFETY: `out` is libsrtp's out-pointer, checked non-null.
    unsafe { *out = Box::into_raw(cipher) };
    STATUS_OK
}

unsafe extern "C" fn icm_dealloc(cipher: *mut Cipher) -> Status {
    if cipher.is_null() {
        return STATUS_BAD_PARAM;
    }
    // SAFETY: made by `icm_alloc` with Box, handed back once by libsrtp.
    let cipher = unsafe { Box::from_raw(cipher) };
    if !cipher.state.is_null() {
        // SAFETY: as above. Dropping it zeroes the key schedule (the aes crate's
        // `zeroize` feature); the salt and counters are cleared here.
        let mut state = unsafe { Box::from_raw(cipher.state.cast::<Icm>()) };
        state.offset = [0; 16];
        state.counter = Counter::start([0; 16]);
        state.keystream = [0; 16];
    }
    STATUS_OK
}

/// # Safety
/// `state` from `icm_alloc`, `key` 30 readable bytes (libsrtp passes key || salt).
unsafe extern "C" fn icm_init(state: *mut c_void, key: *const u8) -> Status {
    if state.is_null() || key.is_null() {
        return STATUS_BAD_PARAM;
    }
    // SAFETY: see above.
    let (icm, key) = unsafe {
        (
            &mut *state.cast::<Icm>(),
            &*key.cast::<[u8; ICM_KEY_WITH_SALT]>(),
        )
    };
    icm.set_key(key);
    AES_KEYS_SET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    STATUS_OK
}

unsafe extern "C" fn icm_set_iv(state: *mut c_void, iv: *mut u8, _direction: c_int) -> Status {
    if state.is_null() || iv.is_null() {
        return STATUS_BAD_PARAM;
    }
    // SAFETY: `state` from `icm_alloc`; libsrtp's IVs are 16 bytes (a v128_t).
    let (icm, iv) = unsafe { (&mut *state.cast::<Icm>(), &*iv.cast::<[u8; 16]>()) };
    icm.set_iv(iv);
    STATUS_OK
}

unsafe extern "C" fn icm_encrypt(state: *mut c_void, buffer: *mut u8, len: *mut c_uint) -> Status {
    if state.is_null() || len.is_null() {
        return STATUS_BAD_PARAM;
    }
    // SAFETY: `state` from `icm_alloc`; `buffer` holds `*len` bytes.
    let (icm, len) = unsafe { (&mut *state.cast::<Icm>(), *len as usize) };
    if len == 0 {
        return STATUS_OK;
    }
    if buffer.is_null() {
        return STATUS_BAD_PARAM;
    }
    // SAFETY: as above.
    let data = unsafe { std::slice::from_raw_parts_mut(buffer, len) };
    if icm.aes.is_none() {
        return STATUS_CIPHER_FAIL;
    }
    if icm.apply(data) {
        STATUS_OK
    } else {
        STATUS_TERMINUS
    }
}

unsafe extern "C" fn hmac_alloc(out: *mut *mut Auth, key_len: c_int, out_len: c_int) -> Status {
    if out.is_null() || !(0..=SHA1_LEN as c_int).contains(&out_len) || key_len < 0 {
        return STATUS_BAD_PARAM;
    }
    let state = Box::into_raw(Box::new(HmacSha1::new(&[]))).cast::<c_void>();
    let auth = Box::new(Auth {
        kind: &HMAC_SHA1.0,
        state,
        out_len,
        key_len,
        prefix_len: 0,
    });
    // SAFETY: `out` is libsrtp's out-pointer, checked non-null.
    unsafe { *out = Box::into_raw(auth) };
    STATUS_OK
}

unsafe extern "C" fn hmac_dealloc(auth: *mut Auth) -> Status {
    if auth.is_null() {
        return STATUS_BAD_PARAM;
    }
    // SAFETY: made by `hmac_alloc` with Box, handed back once by libsrtp.
    let auth = unsafe { Box::from_raw(auth) };
    if !auth.state.is_null() {
        // SAFETY: as above.
        drop(unsafe { Box::from_raw(auth.state.cast::<HmacSha1>()) });
    }
    STATUS_OK
}

unsafe extern "C" fn hmac_init(state: *mut c_void, key: *const u8, key_len: c_int) -> Status {
    if state.is_null() || key.is_null() || key_len < 0 {
        return STATUS_BAD_PARAM;
    }
    // SAFETY: `state` from `hmac_alloc`; `key` holds `key_len` bytes.
    let (hmac, key) = unsafe {
        (
            &mut *state.cast::<HmacSha1>(),
            std::slice::from_raw_parts(key, key_len as usize),
        )
    };
    *hmac = HmacSha1::new(key);
    STATUS_OK
}

unsafe extern "C" fn hmac_start(state: *mut c_void) -> Status {
    if state.is_null() {
        return STATUS_BAD_PARAM;
    }
    // SAFETY: `state` from `hmac_alloc`.
    unsafe { &mut *state.cast::<HmacSha1>() }.start();
    STATUS_OK
}

unsafe extern "C" fn hmac_update(state: *mut c_void, data: *const u8, len: c_int) -> Status {
    if state.is_null() || len < 0 || (data.is_null() && len > 0) {
        return STATUS_BAD_PARAM;
    }
    // SAFETY: `state` from `hmac_alloc`; `data` holds `len` bytes.
    let hmac = unsafe { &mut *state.cast::<HmacSha1>() };
    if len > 0 {
        hmac.update(unsafe { std::slice::from_raw_parts(data, len as usize) });
    }
    STATUS_OK
}

unsafe extern "C" fn hmac_compute(
    state: *mut c_void,
    data: *const u8,
    len: c_int,
    tag_len: c_int,
    tag: *mut u8,
) -> Status {
    if state.is_null() || tag.is_null() || len < 0 || (data.is_null() && len > 0) {
        return STATUS_BAD_PARAM;
    }
    if !(0..=SHA1_LEN as c_int).contains(&tag_len) {
        return STATUS_AUTH_FAIL;
    }
    // SAFETY: `state` from `hmac_alloc`; `data` holds `len` bytes, `tag` room for
    // `tag_len`.
    let hmac = unsafe { &mut *state.cast::<HmacSha1>() };
    if len > 0 {
        hmac.update(unsafe { std::slice::from_raw_parts(data, len as usize) });
    }
    let full = hmac.finish();
    let out = unsafe { std::slice::from_raw_parts_mut(tag, tag_len as usize) };
    out.copy_from_slice(&full[..tag_len as usize]);
    STATUS_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18: only libsrtp 2.5 and 2.7 get the replacement.
    #[test]
    fn only_tested_libsrtp_versions_get_the_replacement() {
        let v = |major: u32, minor: u32, micro: u32| major << 24 | minor << 16 | micro;
        assert!(version_tested(v(2, 5, 0)));
        assert!(version_tested(v(2, 7, 3)));
        for other in [
            v(2, 4, 2),
            v(2, 6, 0),
            v(2, 8, 0),
            v(3, 0, 0),
            v(1, 5, 0),
            0,
        ] {
            assert!(!version_tested(other), "{}", version_string(other));
        }
        assert_eq!(version_string(v(2, 6, 1)), "2.6.1");
        let error = SrtpCryptoError::UntestedVersion {
            found: version_string(v(2, 6, 1)),
        };
        assert!(
            error.to_string().contains("libsrtp 2.6.1 is not a version"),
            "{error}"
        );
    }

    #[test]
    fn icm_gives_libsrtps_known_answer() {
        let mut icm = Icm::new();
        icm.set_key(&ICM_TEST_KEY);
        icm.set_iv(&ICM_TEST_INDEX);
        let mut data = ICM_TEST_PLAINTEXT;
        assert!(icm.apply(&mut data));
        assert_eq!(data, ICM_TEST_CIPHERTEXT);
    }

    #[test]
    fn icm_keystream_continues_across_calls_and_restarts_at_each_iv() {
        let key: [u8; 30] = std::array::from_fn(|i| i as u8 * 7);
        let iv: [u8; 16] = std::array::from_fn(|i| if i < 14 { i as u8 } else { 0 });
        let mut whole = Icm::new();
        whole.set_key(&key);
        whole.set_iv(&iv);
        let mut one = vec![0u8; 1337];
        assert!(whole.apply(&mut one));
        // The same keystream in odd pieces (inside a block, across blocks, batches).
        let mut pieces = Icm::new();
        pieces.set_key(&key);
        pieces.set_iv(&iv);
        let mut split = vec![0u8; 1337];
        let mut rest = &mut split[..];
        for size in [1, 5, 16, 33, 200, 7, 1000] {
            let take = size.min(rest.len());
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(take);
            assert!(pieces.apply(head));
            rest = tail;
        }
        assert!(pieces.apply(rest));
        assert_eq!(one, split);
        // A new IV starts the keystream again; the same IV gives the same keystream.
        whole.set_iv(&iv);
        let mut again = vec![0u8; 1337];
        assert!(whole.apply(&mut again));
        assert_eq!(one, again);
        // Decrypting is encrypting.
        whole.set_iv(&iv);
        assert!(whole.apply(&mut again));
        assert!(again.iter().all(|&b| b == 0));
    }

    #[test]
    fn icm_refuses_to_reuse_keystream_past_the_block_counter() {
        let mut icm = Icm::new();
        icm.set_key(&[1; 30]);
        icm.set_iv(&[0; 16]);
        let mut big = vec![0u8; 65536 * 16];
        assert!(icm.apply(&mut big));
        assert!(!icm.apply(&mut [0u8; 1]), "2^16 blocks is all one IV gives");
        icm.set_iv(&[0; 16]);
        assert!(icm.apply(&mut [0u8; 1]));
    }

    #[test]
    fn icm_without_a_key_fails() {
        assert!(!Icm::new().apply(&mut [0u8; 4]));
    }

    #[test]
    fn hmac_sha1_gives_rfc_2202_answers() {
        let cases: [(&[u8], &[u8], &str); 4] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b617318655057264e28bc0b6fb378c8ef146be00",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            ),
            (
                &[0xaa; 20],
                &[0xdd; 50],
                "125d7342b9ac11cd91a39af48aa17b4f63f175d3",
            ),
            (
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "aa4ae5e15272d00e95705637ce8a3b55ed402112",
            ),
        ];
        for (key, data, want) in cases {
            let mut hmac = HmacSha1::new(key);
            // In two updates, the way libsrtp feeds a packet and then its ROC.
            let (a, b) = data.split_at(data.len() / 2);
            hmac.update(a);
            hmac.update(b);
            let tag: String = hmac.finish().iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(tag, want);
            // `finish` leaves it started again for the next packet.
            hmac.update(data);
            let again: String = hmac.finish().iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(again, want);
            // `start` drops whatever was fed since the last tag.
            hmac.update(b"a packet libsrtp gave up on");
            hmac.start();
            hmac.update(data);
            let restarted: String = hmac.finish().iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(restarted, want);
        }
    }

    #[test]
    fn the_c_entry_points_check_their_arguments() {
        // SAFETY: null and wrong-size arguments, which the entry points must refuse.
        unsafe {
            let mut cipher = std::ptr::null_mut();
            assert_eq!(icm_alloc(&mut cipher, 46, 0), STATUS_BAD_PARAM);
            assert_eq!(icm_alloc(&mut cipher, 30, 0), STATUS_OK);
            let state = (*cipher).state;
            let mut len: c_uint = 4;
            assert_eq!(
                icm_encrypt(state, [0u8; 4].as_mut_ptr(), &mut len),
                STATUS_CIPHER_FAIL
            );
            assert_eq!(icm_init(state, std::ptr::null()), STATUS_BAD_PARAM);
            assert_eq!(icm_dealloc(cipher), STATUS_OK);
            let mut auth = std::ptr::null_mut();
            assert_eq!(hmac_alloc(&mut auth, 20, 21), STATUS_BAD_PARAM);
            assert_eq!(hmac_alloc(&mut auth, 20, 10), STATUS_OK);
            let mut tag = [0u8; 10];
            assert_eq!(
                hmac_compute((*auth).state, std::ptr::null(), 0, 21, tag.as_mut_ptr()),
                STATUS_AUTH_FAIL
            );
            assert_eq!(hmac_dealloc(auth), STATUS_OK);
        }
    }
}
