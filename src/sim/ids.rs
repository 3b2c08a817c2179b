//! Seeded generators for vendor ids and secrets: with `--seed`, a run is reproducible.

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub struct IdGen(Mutex<StdRng>);

impl IdGen {
    pub fn new(seed: u64) -> Self {
        IdGen(Mutex::new(StdRng::seed_from_u64(seed)))
    }

    /// `n` lower-case hex characters (Sisense ObjectIds are 24).
    pub fn hex(&self, n: usize) -> String {
        let mut rng = self.0.lock();
        (0..n)
            .map(|_| char::from_digit(rng.random_range(0..16u32), 16).unwrap_or('0'))
            .collect()
    }

    /// A random (v4-shaped) UUID string, e.g. Metabase session ids.
    pub fn uuid(&self) -> String {
        let mut bytes = [0u8; 16];
        self.0.lock().fill(&mut bytes);
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    /// `n` random bytes.
    pub fn bytes(&self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.0.lock().fill(&mut v[..]);
        v
    }
}
