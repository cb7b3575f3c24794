//! The simulated population behind the demo lake: people with devices, sign-ups, orders
//! and CRM records, and the rows each source system would have logged about them. Every
//! identifier that belongs to a person is reachable from the others through the rows, so
//! the ground truth is what a correct stitcher can know.

use std::ops::Range;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Microseconds since the Unix epoch.
pub type Micros = i64;

const DAY: Micros = 86_400_000_000;
/// 2025-01-01T00:00:00Z
const START: Micros = 1_735_689_600_000_000;
/// 2026-06-30T00:00:00Z: nothing happens after this; the truth's windows end here.
pub const END: Micros = 1_782_777_600_000_000;

/// Identifiers shared by many people: what blocklists and hub rules exist for.
pub const JUNK_EMAIL: &str = "test@test.com";
pub const JUNK_USER_ID: &str = "unknown";
pub const JUNK_DEVICE: &str = "00000000-0000-0000-0000-000000000000";
pub const JUNK_PHONE: &str = "555-555-5555";
pub const JUNK_PHONE_E164: &str = "+15555555555";

const FIRST: [&str; 24] = [
    "Ada", "Ben", "Chloé", "Dmitri", "Elena", "Farah", "Giulia", "Hiro", "Ines", "Jonas", "Kemal",
    "Lena", "Mateo", "Noor", "Oscar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Víctor",
    "Wen", "Zoë",
];
const LAST: [&str; 20] = [
    "Adeyemi", "Berg", "Costa", "Dubois", "Evans", "Fischer", "García", "Hansen", "Ivanova",
    "Jensen", "Kim", "López", "Müller", "Nakamura", "O'Brien", "Patel", "Rossi", "Silva", "Tanaka",
    "Weber",
];
const DOMAINS: [&str; 6] = [
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "icloud.com",
    "proton.me",
    "acme.io",
];
const AREAS: [u32; 20] = [
    212, 213, 305, 312, 415, 503, 512, 617, 646, 702, 718, 720, 786, 813, 832, 917, 929, 949, 971,
    984,
];
const PRODUCTS: u32 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Browses without ever identifying: one device, clickstream only.
    Anonymous,
    /// Has an account: user id and email, maybe a phone, several devices.
    Registered,
    /// Buys as a guest: email at checkout, no account.
    Guest,
}

/// One real person and everything the lake will hold about them.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub kind: Kind,
    pub first_name: &'static str,
    pub last_name: &'static str,
    pub devices: Vec<String>,
    pub user_id: Option<String>,
    pub email: Option<String>,
    /// National format, e.g. `4155550123`.
    pub phone: Option<String>,
    pub crm_id: Option<String>,
    /// Another person's device this person also uses (a family tablet).
    pub borrowed_device: Option<String>,
    pub start: Micros,
}

impl Person {
    pub fn phone_e164(&self) -> Option<String> {
        self.phone.as_ref().map(|p| format!("+1{p}"))
    }
}

pub struct Track {
    pub anonymous_id: String,
    pub user_id: Option<String>,
    pub event: &'static str,
    pub product_id: Option<String>,
    pub revenue_cents: Option<i64>,
    pub ts: Micros,
}

pub struct Identify {
    pub anonymous_id: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub ts: Micros,
}

pub struct Order {
    pub order_id: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub amount_cents: i64,
    pub ts: Micros,
}

pub struct Crm {
    pub crm_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub updated_at: Micros,
}

pub struct Payment {
    pub payment_id: String,
    pub customer_email: String,
    pub amount_cents: i64,
    pub ts: Micros,
}

/// What the lake should say about one person: the expected feature values.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub n_events: i64,
    pub n_orders: i64,
    pub order_revenue_cents: i64,
    pub n_payments: i64,
    pub payment_total_cents: i64,
    pub first_seen: Option<Micros>,
    pub last_seen: Option<Micros>,
    /// Revenue the clickstream logged (`order_completed` events).
    pub track_revenue_cents: i64,
    /// Order revenue in the 30 days up to [`END`].
    pub revenue_30d_cents: i64,
    /// `(time, product)` of every `product_viewed` event.
    pub viewed: Vec<(Micros, String)>,
}

impl Expected {
    /// The `n` most recently viewed products, most recent first (equal times: smaller first).
    pub fn last_viewed(&self, n: usize) -> Vec<&str> {
        let mut v: Vec<&(Micros, String)> = self.viewed.iter().collect();
        v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        v.into_iter().take(n).map(|(_, p)| p.as_str()).collect()
    }

    fn seen(&mut self, ts: Micros) {
        self.first_seen = Some(self.first_seen.map_or(ts, |f| f.min(ts)));
        self.last_seen = Some(self.last_seen.map_or(ts, |l| l.max(ts)));
    }
}

/// Every source table, plus the truth.
#[derive(Default)]
pub struct Lake {
    pub people: Vec<Person>,
    pub expected: Vec<Expected>,
    pub tracks: Vec<Track>,
    pub identifies: Vec<Identify>,
    pub orders: Vec<Order>,
    pub crm: Vec<Crm>,
    pub payments: Vec<Payment>,
    /// Every identifier the rows carry: its type, its normalized value and whose it is
    /// (`None` for junk shared by unrelated people). May repeat.
    pub ids: Vec<(&'static str, String, Option<usize>)>,
    /// The people `first..first + people.len()`.
    pub first: usize,
    /// The identifiers of the people just outside that range, who may share a device with
    /// the first or the last person in it.
    pub neighbour_ids: Vec<(&'static str, String, Option<usize>)>,
}

impl Lake {
    fn saw(&mut self, person: usize, id_type: &'static str, value: &str) {
        let junk = matches!(
            value,
            JUNK_EMAIL | JUNK_USER_ID | JUNK_DEVICE | JUNK_PHONE_E164
        );
        if !value.trim().is_empty() {
            self.ids
                .push((id_type, value.to_string(), (!junk).then_some(person)));
        }
    }
}

/// One random stream per person, so a person's data does not depend on the population size.
fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

fn uuid(rng: &mut ChaCha8Rng) -> String {
    let a: u128 = rng.random();
    let h = format!("{a:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A bijection on `0..modulus` that scrambles sequential numbers.
fn scramble(i: u64, modulus: u64) -> u64 {
    (i.wrapping_mul(7919) + 104_729) % modulus
}

fn kind(rng: &mut ChaCha8Rng) -> Kind {
    let roll: f64 = rng.random();
    if roll < 0.20 {
        Kind::Anonymous
    } else if roll < 0.85 {
        Kind::Registered
    } else {
        Kind::Guest
    }
}

fn person(seed: u64, i: usize) -> Person {
    let mut rng = rng_for(seed, i as u64);
    let kind = kind(&mut rng);
    let first_name = FIRST[rng.random_range(0..FIRST.len())];
    let last_name = LAST[rng.random_range(0..LAST.len())];
    let n_devices = match kind {
        Kind::Registered => {
            1 + usize::from(rng.random_bool(0.45)) + usize::from(rng.random_bool(0.15))
        }
        _ => 1,
    };
    let devices = (0..n_devices).map(|_| uuid(&mut rng)).collect();
    let iu = i as u64;
    let user_id = (kind == Kind::Registered).then(|| format!("u{:08}", scramble(iu, 100_000_000)));
    let email = (kind != Kind::Anonymous).then(|| {
        let local = format!(
            "{}.{}{}",
            ascii_fold(first_name),
            ascii_fold(last_name),
            scramble(iu, 100_000_000)
        );
        format!("{local}@{}", DOMAINS[rng.random_range(0..DOMAINS.len())])
    });
    let phone = (kind != Kind::Anonymous && rng.random_bool(0.5)).then(|| {
        let area = AREAS[i % AREAS.len()];
        let line = scramble(iu / AREAS.len() as u64, 8_000_000) + 2_000_000;
        format!("{area}{line:07}")
    });
    let in_crm = match kind {
        Kind::Registered => rng.random_bool(0.55),
        Kind::Guest => rng.random_bool(0.25),
        Kind::Anonymous => false,
    };
    let crm_id = in_crm.then(|| format!("CRM-{:07}", scramble(iu, 10_000_000)));
    let start = START + rng.random_range(0..(END - START - 30 * DAY));
    Person {
        id: format!("p{i:07}"),
        kind,
        first_name,
        last_name,
        devices,
        user_id,
        email,
        phone,
        crm_id,
        borrowed_device: None,
        start,
    }
}

fn ascii_fold(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            'é' | 'è' => Some('e'),
            'í' => Some('i'),
            'ë' => Some('e'),
            'ö' | 'ó' => Some('o'),
            'ü' | 'ú' => Some('u'),
            'á' => Some('a'),
            c if c.is_ascii_alphabetic() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Writes an email the way a CRM import or a payment form might: different case, stray spaces.
fn messy_email(rng: &mut ChaCha8Rng, email: &str) -> String {
    match rng.random_range(0..4) {
        0 => email.to_string(),
        1 => email.to_uppercase(),
        2 => format!("  {email} "),
        _ => {
            let (local, domain) = email.split_once('@').expect("generated emails have @");
            let mut cap: String = local[..1].to_uppercase();
            cap.push_str(&local[1..]);
            format!("{cap}@{}", domain.to_uppercase())
        }
    }
}

/// Writes a national number in one of the formats people type.
fn messy_phone(rng: &mut ChaCha8Rng, national: &str) -> String {
    let (a, b, c) = (&national[0..3], &national[3..6], &national[6..10]);
    match rng.random_range(0..5) {
        0 => format!("({a}) {b}-{c}"),
        1 => format!("+1 {a} {b} {c}"),
        2 => format!("{a}.{b}.{c}"),
        3 => format!("1-{a}-{b}-{c}"),
        _ => national.to_string(),
    }
}

/// Who among `customers` people also uses the previous registered person's first device:
/// the one tie between neighbours, decided up front so that people can be simulated a range
/// at a time. Deterministic in `seed`.
pub fn borrowers(seed: u64, customers: usize) -> Vec<bool> {
    let mut borrowed = vec![false; customers];
    let mut previous = None;
    for i in 0..customers {
        let kind = kind(&mut rng_for(seed, i as u64));
        borrowed[i] = kind == Kind::Registered
            && previous == Some(Kind::Registered)
            && !borrowed[i - 1]
            && rng_for(seed ^ 0x5eed_5a4e, i as u64).random_bool(0.02);
        previous = Some(kind);
    }
    borrowed
}

/// Simulates the people `range` of a population whose [`borrowers`] are `borrowed`.
/// Deterministic in `seed`; a person's rows do not depend on the range they are simulated in.
pub fn simulate(seed: u64, range: Range<usize>, borrowed: &[bool]) -> Lake {
    let person_at = |i: usize| {
        let mut p = person(seed, i);
        if borrowed[i] {
            p.borrowed_device = Some(person(seed, i - 1).devices.swap_remove(0));
        }
        p
    };
    let mut lake = Lake {
        first: range.start,
        people: range.clone().map(person_at).collect(),
        ..Lake::default()
    };
    lake.expected = vec![Expected::default(); range.len()];
    for i in range.clone() {
        let p = lake.people[i - range.start].clone();
        let mut exp = Expected::default();
        activity(&mut activity_rng(seed, i), i, &p, &mut lake, &mut exp);
        lake.expected[i - range.start] = exp;
    }
    // A device lent across the range's edge has an owner outside it.
    let before = range.start.checked_sub(1);
    let after = (range.end < borrowed.len()).then_some(range.end);
    for j in before.into_iter().chain(after) {
        let mut other = Lake::default();
        let p = person_at(j);
        activity(
            &mut activity_rng(seed, j),
            j,
            &p,
            &mut other,
            &mut Expected::default(),
        );
        lake.neighbour_ids.append(&mut other.ids);
    }
    lake
}

fn activity_rng(seed: u64, i: usize) -> ChaCha8Rng {
    rng_for(seed ^ 0xe7e7_5000, i as u64)
}

fn activity(rng: &mut ChaCha8Rng, i: usize, p: &Person, lake: &mut Lake, exp: &mut Expected) {
    // Nothing after END: people who arrive late are seen for less long.
    let span = (rng.random_range(10..180) * DAY).min(END - p.start - 3600 * 1_000_000);
    let at = |rng: &mut ChaCha8Rng| p.start + rng.random_range(0..span);
    // Phone-only sign-in on a second device, tied to the account at checkout.
    let phone_device =
        (p.kind == Kind::Registered && p.phone.is_some() && p.devices.len() > 1).then_some(1usize);

    // Identifies: who the person said they were, device by device.
    for (d, device) in p.devices.iter().enumerate() {
        if p.kind == Kind::Anonymous {
            break;
        }
        let times = 1 + rng.random_range(0..3);
        for k in 0..times {
            let mut row = Identify {
                anonymous_id: device.clone(),
                user_id: p.user_id.clone(),
                email: (d == 0).then(|| p.email.clone()).flatten(),
                phone: None,
                ts: at(rng),
            };
            if Some(d) == phone_device {
                row.user_id = None;
                row.phone = p.phone.as_deref().map(|ph| messy_phone(rng, ph));
            }
            if k > 0 && rng.random_bool(0.03) {
                row.email = Some(JUNK_EMAIL.into());
            } else if k > 0 && rng.random_bool(0.03) {
                row.email = Some(String::new());
            }
            exp.seen(row.ts);
            record_identify(lake, i, &row);
            lake.identifies.push(row);
        }
    }
    if let (Some(device), Some(user_id)) = (&p.borrowed_device, &p.user_id) {
        let row = Identify {
            anonymous_id: device.clone(),
            user_id: Some(user_id.clone()),
            email: None,
            phone: None,
            ts: at(rng),
        };
        exp.seen(row.ts);
        record_identify(lake, i, &row);
        lake.identifies.push(row);
    }

    // Orders (and their payments) for people who buy.
    let n_orders = match p.kind {
        Kind::Anonymous => 0,
        Kind::Guest => 1 + usize::from(rng.random_bool(0.4)),
        Kind::Registered => {
            let n = rng.random_range(0..4);
            if phone_device.is_some() {
                n.max(1)
            } else {
                n
            }
        }
    };
    let mut order_times = Vec::with_capacity(n_orders);
    for k in 0..n_orders {
        let ts = at(rng);
        let amount_cents = rng.random_range(500..50_000);
        let order_id = format!("o-{}-{k}", &p.id[1..]);
        let phone = match (&p.phone, k) {
            (Some(ph), 0) => Some(messy_phone(rng, ph)),
            (Some(ph), _) if rng.random_bool(0.3) => Some(messy_phone(rng, ph)),
            _ if rng.random_bool(0.01) => Some(JUNK_PHONE.into()),
            _ => None,
        };
        for (t, v) in [
            ("user_id", p.user_id.clone()),
            ("email", p.email.clone()),
            ("phone", phone.as_deref().map(e164)),
        ] {
            if let Some(v) = v {
                lake.saw(i, t, &v);
            }
        }
        lake.orders.push(Order {
            order_id,
            user_id: p.user_id.clone(),
            email: p.email.clone(),
            phone,
            amount_cents,
            ts,
        });
        exp.n_orders += 1;
        exp.order_revenue_cents += amount_cents;
        if ts > END - 30 * DAY && ts <= END {
            exp.revenue_30d_cents += amount_cents;
        }
        exp.seen(ts);
        order_times.push((ts, amount_cents));
        if rng.random_bool(0.9) {
            let email = p.email.as_deref().expect("buyers have an email");
            let pay_ts = ts + rng.random_range(1..600) * 1_000_000;
            lake.saw(i, "email", email);
            lake.saw(i, "payment_id", &format!("pay_{}_{k}", &p.id[1..]));
            lake.payments.push(Payment {
                payment_id: format!("pay_{}_{k}", &p.id[1..]),
                customer_email: messy_email(rng, email),
                amount_cents,
                ts: pay_ts,
            });
            exp.n_payments += 1;
            exp.payment_total_cents += amount_cents;
            exp.seen(pay_ts);
        }
    }

    // CRM contact: names, and the email and phone as a CRM import writes them.
    if let Some(crm_id) = &p.crm_id {
        lake.saw(i, "crm_id", crm_id);
        for (t, v) in [("email", p.email.clone()), ("phone", p.phone_e164())] {
            if let Some(v) = v {
                lake.saw(i, t, &v);
            }
        }
        lake.crm.push(Crm {
            crm_id: crm_id.clone(),
            email: p.email.as_deref().map(|e| messy_email(rng, e)),
            phone: p.phone.as_deref().map(|ph| messy_phone(rng, ph)),
            first_name: p.first_name.to_string(),
            last_name: p.last_name.to_string(),
            updated_at: at(rng),
        });
        exp.seen(lake.crm.last().expect("just pushed").updated_at);
    }

    // Clickstream: about 22 events, on the person's devices, logged in where they signed in.
    let n_events = rng.random_range(12..34);
    let mut devices: Vec<(&str, Option<&str>)> = p
        .devices
        .iter()
        .enumerate()
        .map(|(d, dev)| {
            let logged_in = p.user_id.is_some() && Some(d) != phone_device;
            (
                dev.as_str(),
                if logged_in {
                    p.user_id.as_deref()
                } else {
                    None
                },
            )
        })
        .collect();
    if let (Some(dev), Some(uid)) = (&p.borrowed_device, &p.user_id) {
        devices.push((dev.as_str(), Some(uid.as_str())));
    }
    for _ in 0..n_events {
        let (device, user_id) = devices[rng.random_range(0..devices.len())];
        let roll: f64 = rng.random();
        let (event, product) = if roll < 0.5 {
            ("page_viewed", None)
        } else if roll < 0.85 {
            ("product_viewed", Some(product(rng)))
        } else {
            ("added_to_cart", Some(product(rng)))
        };
        let mut row = Track {
            anonymous_id: device.to_string(),
            user_id: user_id.map(str::to_string),
            event,
            product_id: product,
            revenue_cents: None,
            ts: at(rng),
        };
        // Instrumentation bugs: a placeholder user id, an all-zero device id.
        if row.user_id.is_none() && rng.random_bool(0.03) {
            row.user_id = Some(JUNK_USER_ID.into());
        } else if row.user_id.is_some() && rng.random_bool(0.02) {
            row.anonymous_id = JUNK_DEVICE.into();
        }
        exp.n_events += 1;
        exp.seen(row.ts);
        if row.event == "product_viewed" {
            if let Some(product) = &row.product_id {
                exp.viewed.push((row.ts, product.clone()));
            }
        }
        lake.saw(i, "anonymous_id", &row.anonymous_id);
        if let Some(uid) = &row.user_id {
            lake.saw(i, "user_id", uid);
        }
        lake.tracks.push(row);
    }
    for (ts, amount_cents) in order_times {
        let (device, user_id) = devices[0];
        lake.saw(i, "anonymous_id", device);
        lake.tracks.push(Track {
            anonymous_id: device.to_string(),
            user_id: user_id.map(str::to_string),
            event: "order_completed",
            product_id: Some(product(rng)),
            revenue_cents: Some(amount_cents),
            ts,
        });
        exp.n_events += 1;
        exp.track_revenue_cents += amount_cents;
    }
}

fn record_identify(lake: &mut Lake, i: usize, row: &Identify) {
    lake.saw(i, "anonymous_id", &row.anonymous_id);
    if let Some(uid) = &row.user_id {
        lake.saw(i, "user_id", uid);
    }
    if let Some(email) = &row.email {
        lake.saw(i, "email", email);
    }
    if let Some(phone) = &row.phone {
        lake.saw(i, "phone", &e164(phone));
    }
}

/// The E.164 form of a generated phone number (all generated numbers are North American).
fn e164(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let national = digits
        .strip_prefix('1')
        .filter(|d| d.len() == 10)
        .unwrap_or(&digits);
    format!("+1{national}")
}

/// Products are viewed with a skew: a few are popular.
fn product(rng: &mut ChaCha8Rng) -> String {
    let u: f64 = rng.random();
    format!("SKU-{:05}", (u * u * f64::from(PRODUCTS)) as u32)
}
