//! The preload (Contact rows that `returning` and `checkout-mix` refer to, and its import CSV)
//! and the workloads that use it.

use std::fs::File;
use std::io;

use idrecon::contact::Timestamp;
use idrecon::rows::COLUMNS;
use petgraph::unionfind::UnionFind;

use crate::values::{
    Gen, Request, email_text, phone_text, request_both, request_email, request_phone,
};
use crate::{GenStats, Workload};

/// Random stream of the preload; independent of the events.
const PRELOAD_STREAM: u64 = 1;
/// `2024-01-01T00:00:00.000Z` in milliseconds since the epoch.
const PRELOAD_EPOCH_MS: i64 = 1_704_067_200_000;
const DAY_MS: u64 = 86_400_000;

const NONE: u32 = u32::MAX;

/// The preloaded Contact rows, compactly: row `r` has id `r + 1`; email/phone are serials
/// (0 = null); rows of one identity are chained through `prev`.
pub struct Preload {
    email: Vec<u32>,
    phone: Vec<u32>,
    ident: Vec<u32>,
    prev: Vec<u32>,
    /// Per identity: its primary row and its newest row.
    primary: Vec<u32>,
    last: Vec<u32>,
}

impl Preload {
    fn person(ident: u32) -> u64 {
        u64::from(ident) | 1 << 41
    }

    fn email_of(ident: u32, serial: u32) -> String {
        email_text(u64::from(serial), Self::person(ident))
    }

    /// Draws the `n` preload rows from their own random stream, writing each to `csv` (an
    /// import CSV with the header [`COLUMNS`]) when given.
    pub fn build(
        seed: u64,
        n: u64,
        mut csv: Option<&mut csv::Writer<File>>,
    ) -> io::Result<Preload> {
        let mut g = Gen::new(seed, PRELOAD_STREAM);
        let cap = n as usize;
        let mut p = Preload {
            email: Vec::with_capacity(cap),
            phone: Vec::with_capacity(cap),
            ident: Vec::with_capacity(cap),
            prev: Vec::with_capacity(cap),
            primary: Vec::new(),
            last: Vec::new(),
        };
        if let Some(w) = csv.as_mut() {
            w.write_record(COLUMNS)?;
        }
        let (mut next_e, mut next_p) = (0u32, 0u32);
        let mut fresh_e = || {
            next_e += 1;
            next_e
        };
        let mut fresh_p = || {
            next_p += 1;
            next_p
        };
        let (mut es, mut ps) = (Vec::new(), Vec::new());
        let mut t = PRELOAD_EPOCH_MS;
        for r in 0..n as u32 {
            t += 1 + g.below(10_000) as i64;
            let mut updated = t;
            let new_ident = p.primary.is_empty() || g.chance(650);
            let (ident, e, ph) = if new_ident {
                let ident = p.primary.len() as u32;
                p.primary.push(r);
                p.last.push(NONE);
                match g.weighted(&[940, 40, 20]) {
                    0 => (ident, fresh_e(), fresh_p()),
                    1 => (ident, fresh_e(), 0),
                    _ => (ident, 0, fresh_p()),
                }
            } else {
                let ident = g.index(p.primary.len()) as u32;
                p.values(ident, &mut es, &mut ps);
                match g.weighted(&[500, 400, 100]) {
                    0 if !ps.is_empty() => (ident, fresh_e(), ps[g.index(ps.len())]),
                    0 | 1 if !es.is_empty() => (ident, es[g.index(es.len())], fresh_p()),
                    0 | 1 => (ident, fresh_e(), ps[g.index(ps.len())]),
                    _ => {
                        updated = t + 1 + g.below(30 * DAY_MS) as i64;
                        match g.weighted(&[800, 100, 100]) {
                            0 => (ident, fresh_e(), fresh_p()),
                            1 => (ident, fresh_e(), 0),
                            _ => (ident, 0, fresh_p()),
                        }
                    }
                }
            };
            p.email.push(e);
            p.phone.push(ph);
            p.ident.push(ident);
            p.prev.push(p.last[ident as usize]);
            p.last[ident as usize] = r;
            if let Some(w) = csv.as_mut() {
                // NULL is an empty field, as `psql \copy … CSV HEADER` writes it.
                let phone = if ph != 0 {
                    phone_text(u64::from(ph)).0
                } else {
                    String::new()
                };
                let email = if e != 0 {
                    Self::email_of(ident, e)
                } else {
                    String::new()
                };
                let primary = p.primary[ident as usize];
                let (linked_id, precedence) = if primary == r {
                    (String::new(), "primary")
                } else {
                    ((primary + 1).to_string(), "secondary")
                };
                w.write_record([
                    (r + 1).to_string().as_str(),
                    &phone,
                    &email,
                    &linked_id,
                    precedence,
                    &Timestamp(t).to_string(),
                    &Timestamp(updated).to_string(),
                    "",
                ])?;
            }
        }
        Ok(p)
    }

    /// The email and phone serials of identity `ident` (with repeats).
    fn values(&self, ident: u32, es: &mut Vec<u32>, ps: &mut Vec<u32>) {
        es.clear();
        ps.clear();
        let mut r = self.last[ident as usize];
        while r != NONE {
            let (e, p) = (self.email[r as usize], self.phone[r as usize]);
            if e != 0 {
                es.push(e);
            }
            if p != 0 {
                ps.push(p);
            }
            r = self.prev[r as usize];
        }
    }
}

/// Workloads `returning`, `checkout-mix` and `new`.
pub struct Mix {
    workload: Workload,
    pre: Option<Preload>,
    /// Preload identities linked by this workload's requests.
    linked: UnionFind<u32>,
    next_email: u64,
    next_phone: u64,
    es: Vec<u32>,
    ps: Vec<u32>,
}

impl Mix {
    pub fn new(workload: Workload, pre: Option<Preload>, base: u64) -> Mix {
        let idents = pre.as_ref().map_or(0, |p| p.primary.len());
        Mix {
            workload,
            pre,
            linked: UnionFind::new(idents),
            next_email: base,
            next_phone: base,
            es: Vec::new(),
            ps: Vec::new(),
        }
    }

    pub fn next(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        match self.workload {
            Workload::Returning => self.returning(g, st),
            Workload::CheckoutMix => match g.weighted(&[700, 200, 80, 20]) {
                0 => self.returning(g, st),
                1 => self.new_customer(g, st),
                2 => self.new_value(g, st),
                _ => self.link(g, st),
            },
            Workload::New | Workload::Sample => self.new_customer(g, st),
        }
    }

    fn new_customer(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        st.new_customers += 1;
        self.next_email += 1;
        self.next_phone += 1;
        let email = email_text(self.next_email, self.next_email | 1 << 42);
        request_both(g, st, &email, self.next_phone)
    }

    /// A random preload identity (weighted by its row count) with its values in `es`/`ps`.
    fn pick_ident(&mut self, g: &mut Gen) -> Option<u32> {
        let pre = self.pre.as_ref()?;
        let ident = pre.ident[g.index(pre.ident.len())];
        pre.values(ident, &mut self.es, &mut self.ps);
        Some(ident)
    }

    fn returning(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        let Some(ident) = self.pick_ident(g) else {
            return self.new_customer(g, st);
        };
        st.returning += 1;
        let (es, ps) = (&self.es, &self.ps);
        let shape = match (es.is_empty(), ps.is_empty()) {
            (false, false) => g.weighted(&[700, 150, 150]),
            (false, true) => 1,
            _ => 2,
        };
        let e = (shape != 2).then(|| es[g.index(es.len())]);
        let p = (shape != 1).then(|| ps[g.index(ps.len())]);
        match (e, p) {
            (Some(e), Some(p)) => request_both(g, st, &Preload::email_of(ident, e), u64::from(p)),
            (Some(e), None) => request_email(g, st, &Preload::email_of(ident, e)),
            (_, p) => request_phone(g, st, u64::from(p.unwrap_or(0))),
        }
    }

    fn new_value(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        let Some(ident) = self.pick_ident(g) else {
            return self.new_customer(g, st);
        };
        st.new_values += 1;
        let new_email = match (self.es.is_empty(), self.ps.is_empty()) {
            (false, false) => g.chance(600),
            (true, _) => true,
            (false, true) => false,
        };
        if new_email {
            self.next_email += 1;
            let p = self.ps[g.index(self.ps.len())];
            let e = email_text(self.next_email, Preload::person(ident));
            request_both(g, st, &e, u64::from(p))
        } else {
            self.next_phone += 1;
            let e = self.es[g.index(self.es.len())];
            request_both(g, st, &Preload::email_of(ident, e), self.next_phone)
        }
    }

    /// The email of one preload identity with the phone of another not yet linked to it.
    fn link(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        let Some(pre) = self.pre.as_ref() else {
            return self.new_customer(g, st);
        };
        let (mut es, mut ps) = (Vec::new(), Vec::new());
        let (mut es2, mut ps2) = (Vec::new(), Vec::new());
        for _ in 0..1000 {
            let a = pre.ident[g.index(pre.ident.len())];
            let b = pre.ident[g.index(pre.ident.len())];
            if self.linked.equiv(a, b) {
                continue;
            }
            pre.values(a, &mut es, &mut ps);
            pre.values(b, &mut es2, &mut ps2);
            let pair = if !es.is_empty() && !ps2.is_empty() {
                Some((a, es[g.index(es.len())], ps2[g.index(ps2.len())]))
            } else if !es2.is_empty() && !ps.is_empty() {
                Some((b, es2[g.index(es2.len())], ps[g.index(ps.len())]))
            } else {
                None
            };
            if let Some((owner, e, p)) = pair {
                self.linked.union(a, b);
                st.links += 1;
                return request_both(g, st, &Preload::email_of(owner, e), u64::from(p));
            }
        }
        st.link_fallbacks += 1;
        self.returning(g, st)
    }
}
