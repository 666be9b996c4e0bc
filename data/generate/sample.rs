//! The `sample` workload: a shop's event stream for a fresh service (see the crate docs).

use crate::GenStats;
use crate::values::{Gen, Request, email_text, request_both, request_email, request_phone};

/// One value a customer has used, and the persona (group of values the service has linked, as
/// far as this customer's own requests go) it belongs to.
#[derive(Clone, Copy, Default)]
struct Val {
    serial: u32,
    persona: u8,
}

#[derive(Clone, Default)]
struct Customer {
    emails: [Val; 4],
    n_emails: u8,
    phones: [Val; 3],
    n_phones: u8,
    target_emails: u8,
    target_phones: u8,
    next_persona: u8,
    in_split: bool,
}

impl Customer {
    fn emails(&self) -> &[Val] {
        &self.emails[..self.n_emails as usize]
    }

    fn phones(&self) -> &[Val] {
        &self.phones[..self.n_phones as usize]
    }

    fn push_email(&mut self, v: Val) {
        self.emails[self.n_emails as usize] = v;
        self.n_emails += 1;
    }

    fn push_phone(&mut self, v: Val) {
        self.phones[self.n_phones as usize] = v;
        self.n_phones += 1;
    }

    fn personas(&self) -> u32 {
        let mut mask = 0u32;
        for v in self.emails().iter().chain(self.phones()) {
            mask |= 1 << v.persona;
        }
        mask.count_ones()
    }

    fn relabel(&mut self, from: u8, to: u8) {
        let n_e = self.n_emails as usize;
        let n_p = self.n_phones as usize;
        for v in self.emails[..n_e].iter_mut().chain(&mut self.phones[..n_p]) {
            if v.persona == from {
                v.persona = to;
            }
        }
    }
}

pub struct Sample {
    target: u64,
    events: u64,
    customers: Vec<Customer>,
    /// Customers with two or more personas (candidates for a late link).
    split: Vec<u32>,
    next_email: u64,
    next_phone: u64,
}

impl Sample {
    pub fn new(target: u64, events: u64) -> Sample {
        Sample {
            target,
            events,
            customers: Vec::new(),
            split: Vec::new(),
            next_email: 0,
            next_phone: 0,
        }
    }

    fn fresh_email(&mut self) -> u32 {
        self.next_email += 1;
        self.next_email as u32
    }

    fn fresh_phone(&mut self) -> u32 {
        self.next_phone += 1;
        self.next_phone as u32
    }

    fn email(idx: usize, serial: u32) -> String {
        email_text(u64::from(serial), idx as u64 | 1 << 40)
    }

    pub fn next(&mut self, i: u64, g: &mut Gen, st: &mut GenStats) -> Request {
        let introduced = self.customers.len() as u64;
        let remaining = self.target.saturating_sub(introduced);
        // On schedule (exactly `target` customers by the end), plus a warm-up that makes a
        // young shop's events mostly first purchases.
        if remaining > 0 && (g.below(self.events - i) < remaining || g.below(introduced + 16) < 16)
        {
            return self.new_customer(g, st);
        }
        if !self.split.is_empty() && g.chance(15) {
            return self.late_link(g, st);
        }
        let n = self.customers.len() as u64;
        let idx = g.below(n).min(g.below(n)) as usize;
        self.repeat(idx, g, st)
    }

    fn new_customer(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        st.new_customers += 1;
        let idx = self.customers.len();
        let mut c = Customer {
            target_emails: g.weighted(&[550, 250, 130, 70]) as u8 + 1,
            target_phones: g.weighted(&[700, 220, 80]) as u8 + 1,
            next_persona: 1,
            ..Customer::default()
        };
        if idx > 0 && g.chance(60) {
            let other = &self.customers[g.index(idx)];
            if other.n_phones > 0 {
                let shared = other.phones()[g.index(other.phones().len())].serial;
                let e = self.fresh_email();
                c.push_email(Val {
                    serial: e,
                    persona: 0,
                });
                c.push_phone(Val {
                    serial: shared,
                    persona: 0,
                });
                self.customers.push(c);
                st.family_joins += 1;
                return request_both(g, st, &Self::email(idx, e), u64::from(shared));
            }
        }
        let shape = g.weighted(&[850, 100, 50]);
        let e = (shape != 2).then(|| self.fresh_email());
        let p = (shape != 1).then(|| self.fresh_phone());
        if let Some(serial) = e {
            c.push_email(Val { serial, persona: 0 });
        }
        if let Some(serial) = p {
            c.push_phone(Val { serial, persona: 0 });
        }
        self.customers.push(c);
        match (e, p) {
            (Some(e), Some(p)) => request_both(g, st, &Self::email(idx, e), u64::from(p)),
            (Some(e), None) => request_email(g, st, &Self::email(idx, e)),
            (_, p) => request_phone(g, st, u64::from(p.unwrap_or(0))),
        }
    }

    fn repeat(&mut self, idx: usize, g: &mut Gen, st: &mut GenStats) -> Request {
        let c = &self.customers[idx];
        let under_e = c.n_emails < c.target_emails;
        let under_p = c.n_phones < c.target_phones;
        if (under_e || under_p) && g.chance(250) {
            let kind_email = if under_e && under_p {
                g.chance(600)
            } else {
                under_e
            };
            return self.acquire(idx, kind_email, g, st);
        }
        self.plain(idx, g, st)
    }

    /// The customer starts using a value they had not used before.
    fn acquire(&mut self, idx: usize, kind_email: bool, g: &mut Gen, st: &mut GenStats) -> Request {
        let serial = if kind_email {
            self.fresh_email()
        } else {
            self.fresh_phone()
        };
        let c = &mut self.customers[idx];
        let others = if kind_email { c.phones() } else { c.emails() };
        if !others.is_empty() && g.chance(850) {
            let other = others[g.index(others.len())];
            let v = Val {
                serial,
                persona: other.persona,
            };
            st.acquired_linked += 1;
            if kind_email {
                c.push_email(v);
                request_both(g, st, &Self::email(idx, serial), u64::from(other.serial))
            } else {
                c.push_phone(v);
                request_both(g, st, &Self::email(idx, other.serial), u64::from(serial))
            }
        } else {
            let v = Val {
                serial,
                persona: c.next_persona,
            };
            c.next_persona += 1;
            if kind_email {
                c.push_email(v);
            } else {
                c.push_phone(v);
            }
            if c.personas() >= 2 && !c.in_split {
                c.in_split = true;
                self.split.push(idx as u32);
            }
            st.acquired_alone += 1;
            if kind_email {
                request_email(g, st, &Self::email(idx, serial))
            } else {
                request_phone(g, st, u64::from(serial))
            }
        }
    }

    /// A repeat purchase with values of one persona.
    fn plain(&mut self, idx: usize, g: &mut Gen, st: &mut GenStats) -> Request {
        st.repeats += 1;
        let c = &self.customers[idx];
        let all = c.n_emails as usize + c.n_phones as usize;
        let k = g.index(all);
        let persona = if k < c.n_emails as usize {
            c.emails()[k].persona
        } else {
            c.phones()[k - c.n_emails as usize].persona
        };
        let es: Vec<u32> = c
            .emails()
            .iter()
            .filter(|v| v.persona == persona)
            .map(|v| v.serial)
            .collect();
        let ps: Vec<u32> = c
            .phones()
            .iter()
            .filter(|v| v.persona == persona)
            .map(|v| v.serial)
            .collect();
        let shape = match (es.is_empty(), ps.is_empty()) {
            (false, false) => g.weighted(&[700, 150, 150]),
            (false, true) => 1,
            _ => 2,
        };
        let e = (shape != 2).then(|| es[g.index(es.len())]);
        let p = (shape != 1).then(|| ps[g.index(ps.len())]);
        match (e, p) {
            (Some(e), Some(p)) => request_both(g, st, &Self::email(idx, e), u64::from(p)),
            (Some(e), None) => request_email(g, st, &Self::email(idx, e)),
            (_, p) => request_phone(g, st, u64::from(p.unwrap_or(0))),
        }
    }

    /// The email of one persona with the phone of another: the service merges them.
    fn late_link(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        let j = g.index(self.split.len());
        let idx = self.split[j] as usize;
        let c = &mut self.customers[idx];
        let mut pairs = Vec::new();
        for (ei, e) in c.emails().iter().enumerate() {
            for (pi, p) in c.phones().iter().enumerate() {
                if e.persona != p.persona {
                    pairs.push((ei, pi));
                }
            }
        }
        if pairs.is_empty() {
            return self.plain(idx, g, st);
        }
        let (ei, pi) = pairs[g.index(pairs.len())];
        let (e, p) = (c.emails()[ei], c.phones()[pi]);
        c.relabel(p.persona, e.persona);
        if c.personas() < 2 {
            c.in_split = false;
            self.split.swap_remove(j);
        }
        st.late_links += 1;
        request_both(g, st, &Self::email(idx, e.serial), u64::from(p.serial))
    }
}
