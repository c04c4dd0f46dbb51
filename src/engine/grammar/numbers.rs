//! Numbers as grammars: JSON integers and numbers, optionally bounded (`minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`), spelled the way JSON writes them (no leading zeros).
//!
//! An integer range becomes digit ranges the classic way (`[lo, hi]` split by length, then by
//! the first digit that differs). A bounded `number` is an integer part from such a range
//! followed by a fraction that is free, all zeros or not all zeros, which is exact when the
//! bounds are whole numbers (the schema compiler refuses fractional bounds on `number`).
//! Numbers are at most [`MAX_DIGITS`] digits before and after the point, so a model cannot run
//! on in digits, and exponents are allowed only on unbounded numbers.

use super::{Builder, ByteSet, Elem, GrammarError};

/// Most digits in an integer part and in a fraction.
pub const MAX_DIGITS: usize = 15;
/// Most digits in an exponent.
const MAX_EXP_DIGITS: usize = 3;

/// One bound of a range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// The value.
    pub value: f64,
    /// Whether the value itself is excluded.
    pub exclusive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fraction {
    /// None at all (integers).
    None,
    /// Any (or none).
    Free,
    /// Only zeros (or none): the value is the integer part.
    Zero,
    /// At least one non-zero digit: the value is above the integer part.
    NonZero,
}

fn digit(b: &mut Builder) -> Elem {
    b.class(ByteSet::range(b'0', b'9'))
}

/// Any JSON number (`integer`: no fraction or exponent).
pub fn any(b: &mut Builder, integer: bool) -> Result<Elem, GrammarError> {
    let d = digit(b);
    let nz = b.class(ByteSet::range(b'1', b'9'));
    let minus = b.lit(b"-");
    let sign = b.opt(minus)?;
    let more = b.rep(d, 0, Some(MAX_DIGITS - 1))?;
    let zero = b.lit(b"0");
    let int = b.alt(vec![zero, vec![nz, more]])?;
    if integer {
        return b.seq(vec![sign, int]);
    }
    let frac = fraction(b, Fraction::Free)?;
    let e = b.class(ByteSet::byte(b'e').union(ByteSet::byte(b'E')));
    let pm = b.class(ByteSet::byte(b'+').union(ByteSet::byte(b'-')));
    let pm = b.opt(vec![pm])?;
    let exp_digits = b.rep(d, 1, Some(MAX_EXP_DIGITS))?;
    let exp = b.opt(vec![e, pm, exp_digits])?;
    b.seq(vec![sign, int, frac, exp])
}

/// A number (or integer) within the bounds, or `None` when none exists. Bounds on `number`
/// must be whole numbers; beyond ±10^[`MAX_DIGITS`] they do not constrain.
pub fn bounded(
    b: &mut Builder,
    min: Option<Bound>,
    max: Option<Bound>,
    integer: bool,
) -> Result<Option<Elem>, GrammarError> {
    let limit = 10f64.powi(MAX_DIGITS as i32) - 1.0;
    let min = min.filter(|m| m.value.abs() <= limit);
    let max = max.filter(|m| m.value.abs() <= limit);
    let neg = |b: Bound| Bound {
        value: -b.value,
        exclusive: b.exclusive,
    };
    let mut alts = Vec::new();
    if let Some(pos) = side(b, min, max, integer)? {
        alts.push(vec![pos]);
    }
    // x = -y: min <= x <= max  <=>  -max <= y <= -min; y > 0 so that "-0" is never written.
    let above_zero = Bound {
        value: 0.0,
        exclusive: true,
    };
    let lo = match max.map(neg) {
        Some(l) if l.value > 0.0 || (l.value == 0.0 && l.exclusive) => l,
        _ => above_zero,
    };
    if let Some(negative) = side(b, Some(lo), min.map(neg), integer)? {
        let mut minus = b.lit(b"-");
        minus.push(negative);
        alts.push(minus);
    }
    if alts.is_empty() {
        return Ok(None);
    }
    b.alt(alts).map(Some)
}

/// Non-negative values `y` (written without a sign) with `lo <= y <= hi`.
fn side(
    b: &mut Builder,
    lo: Option<Bound>,
    hi: Option<Bound>,
    integer: bool,
) -> Result<Option<Elem>, GrammarError> {
    let cap = 10u64.pow(MAX_DIGITS as u32) - 1;
    if integer {
        let first = match lo {
            None => 0.0,
            Some(l) if l.exclusive => l.value.floor() + 1.0,
            Some(l) => l.value.ceil(),
        }
        .max(0.0);
        let last = match hi {
            None => cap as f64,
            Some(h) if h.exclusive => h.value.ceil() - 1.0,
            Some(h) => h.value.floor(),
        };
        if last < first {
            return Ok(None);
        }
        return piece(b, first as u64, last as u64, Fraction::None);
    }
    if hi.is_some_and(|h| h.value < 0.0 || (h.value == 0.0 && h.exclusive)) {
        return Ok(None);
    }
    let lo = lo.filter(|l| l.value >= 0.0);
    if let (Some(l), Some(h)) = (lo, hi) {
        if l.value > h.value {
            return Ok(None);
        }
        if l.value == h.value {
            // Exactly one value, and only if both ends include it.
            if l.exclusive || h.exclusive {
                return Ok(None);
            }
            let v = l.value as u64;
            return piece(b, v, v, Fraction::Zero);
        }
    }
    let mut alts = Vec::new();
    let mut middle_first = 0;
    if let Some(l) = lo {
        let v = l.value as u64;
        let frac = if l.exclusive {
            Fraction::NonZero
        } else {
            Fraction::Free
        };
        alts.extend(piece(b, v, v, frac)?);
        middle_first = v + 1;
    }
    let mut middle_last = cap;
    if let Some(h) = hi {
        let v = h.value as u64;
        if !h.exclusive {
            alts.extend(piece(b, v, v, Fraction::Zero)?);
        }
        middle_last = v.saturating_sub(1);
        if v == 0 {
            // Only the upper end itself; nothing lies between.
            return Ok(alts.pop());
        }
    }
    if middle_first <= middle_last {
        alts.extend(piece(b, middle_first, middle_last, Fraction::Free)?);
    }
    if alts.is_empty() {
        return Ok(None);
    }
    b.alt(alts.into_iter().map(|a| vec![a]).collect()).map(Some)
}

/// Integer part in `first..=last`, then a fraction of the given kind.
fn piece(
    b: &mut Builder,
    first: u64,
    last: u64,
    frac: Fraction,
) -> Result<Option<Elem>, GrammarError> {
    let Some(int) = uint_range(b, first, last)? else {
        return Ok(None);
    };
    let frac = fraction(b, frac)?;
    b.seq(vec![int, frac]).map(Some)
}

/// The fraction part (`.digits`, optional unless it must be non-zero).
fn fraction(b: &mut Builder, kind: Fraction) -> Result<Elem, GrammarError> {
    let d = digit(b);
    let dot = b.lit(b".");
    let body = match kind {
        Fraction::None => return b.seq(Vec::new()),
        Fraction::Free => vec![dot[0], b.rep(d, 1, Some(MAX_DIGITS))?],
        Fraction::Zero => {
            let z = b.class(ByteSet::byte(b'0'));
            vec![dot[0], b.rep(z, 1, Some(MAX_DIGITS))?]
        }
        Fraction::NonZero => {
            let z = b.class(ByteSet::byte(b'0'));
            let nz = b.class(ByteSet::range(b'1', b'9'));
            let zeros = b.rep(z, 0, Some(MAX_DIGITS - 1))?;
            let rest = b.rep(d, 0, Some(MAX_DIGITS - 1))?;
            return b.seq(vec![dot[0], zeros, nz, rest]);
        }
    };
    b.opt(body)
}

/// Unsigned integers `first..=last` without leading zeros.
fn uint_range(b: &mut Builder, first: u64, last: u64) -> Result<Option<Elem>, GrammarError> {
    if first > last {
        return Ok(None);
    }
    let len = |v: u64| v.to_string().len();
    let mut alts = Vec::new();
    for n in len(first)..=len(last) {
        let smallest = if n == 1 { 0 } else { 10u64.pow(n as u32 - 1) };
        let largest = 10u64.pow(n as u32) - 1;
        let (a, z) = (first.max(smallest), last.min(largest));
        if a <= z {
            alts.push(fixed(
                b,
                a.to_string().as_bytes(),
                z.to_string().as_bytes(),
            )?);
        }
    }
    b.alt(alts).map(Some)
}

/// Digit strings of one length from `a` to `z` (leading zeros allowed: they are inner digits).
fn fixed(b: &mut Builder, a: &[u8], z: &[u8]) -> Result<Vec<Elem>, GrammarError> {
    let Some((&a0, a_rest)) = a.split_first() else {
        return Ok(Vec::new());
    };
    let (&z0, z_rest) = z.split_first().expect("same length");
    let k = a_rest.len();
    if a0 == z0 {
        let mut out = b.lit(&[a0]);
        out.extend(fixed(b, a_rest, z_rest)?);
        return Ok(out);
    }
    let d = digit(b);
    if a_rest.iter().all(|&c| c == b'0') && z_rest.iter().all(|&c| c == b'9') {
        let mut out = vec![b.class(ByteSet::range(a0, z0))];
        out.extend(std::iter::repeat_n(d, k));
        return Ok(out);
    }
    let nines = vec![b'9'; k];
    let zeros = vec![b'0'; k];
    let mut alts = Vec::new();
    let mut low = b.lit(&[a0]);
    low.extend(fixed(b, a_rest, &nines)?);
    alts.push(low);
    if a0 + 1 < z0 {
        let mut mid = vec![b.class(ByteSet::range(a0 + 1, z0 - 1))];
        mid.extend(std::iter::repeat_n(d, k));
        alts.push(mid);
    }
    let mut high = b.lit(&[z0]);
    high.extend(fixed(b, &zeros, z_rest)?);
    alts.push(high);
    Ok(vec![b.alt(alts)?])
}

#[cfg(test)]
mod tests {
    use super::super::Grammar;
    use super::*;
    use std::sync::Arc;

    fn grammar(min: Option<Bound>, max: Option<Bound>, integer: bool) -> Option<Arc<Grammar>> {
        let mut b = Builder::new(1_000_000);
        let root = bounded(&mut b, min, max, integer).unwrap()?;
        Some(Arc::new(b.build(root)))
    }

    fn accepts(g: &Arc<Grammar>, s: &str) -> bool {
        g.start()
            .feed_all(g, s.as_bytes())
            .is_some_and(|st| st.is_complete())
    }

    /// Whether `x` lies within the bounds (the reference the grammars are checked against).
    fn within(x: f64, min: Option<Bound>, max: Option<Bound>) -> bool {
        let above = |m: Bound| {
            if m.exclusive {
                x > m.value
            } else {
                x >= m.value
            }
        };
        let below = |m: Bound| {
            if m.exclusive {
                x < m.value
            } else {
                x <= m.value
            }
        };
        min.is_none_or(above) && max.is_none_or(below)
    }

    fn incl(v: f64) -> Option<Bound> {
        Some(Bound {
            value: v,
            exclusive: false,
        })
    }

    fn excl(v: f64) -> Option<Bound> {
        Some(Bound {
            value: v,
            exclusive: true,
        })
    }

    #[test]
    fn integer_ranges_accept_exactly_their_members() {
        let cases = [
            (incl(0.0), incl(100.0)),
            (incl(7.0), incl(1234.0)),
            (incl(-50.0), incl(-3.0)),
            (incl(-17.0), incl(205.0)),
            (excl(-1.0), excl(10.0)),
            (incl(99.0), None),
            (None, incl(-42.0)),
            (None, None),
            (incl(5.0), incl(5.0)),
            (incl(2.5), incl(7.5)),
        ];
        for (min, max) in cases {
            let g = grammar(min, max, true).unwrap();
            for v in -1500i64..1500 {
                let x = v as f64;
                let want = within(x, min, max);
                assert_eq!(accepts(&g, &v.to_string()), want, "{v} in {min:?}..{max:?}");
            }
            for bad in ["01", "-0", "+1", "1.0", "", "-"] {
                assert!(!accepts(&g, bad), "{bad} in {min:?}..{max:?}");
            }
        }
        assert!(grammar(incl(5.0), incl(4.0), true).is_none());
        assert!(grammar(excl(4.0), excl(5.0), true).is_none());
    }

    #[test]
    fn bounded_numbers_accept_exactly_their_members() {
        let cases = [
            (incl(0.0), incl(1.0)),
            (excl(0.0), excl(1.0)),
            (incl(-2.0), incl(3.0)),
            (excl(-2.0), incl(0.0)),
            (incl(10.0), None),
            (None, excl(-1.0)),
            (incl(4.0), incl(4.0)),
        ];
        let texts: Vec<String> = (-400i64..400)
            .flat_map(|t| {
                let x = t as f64 / 40.0;
                [format!("{x}"), format!("{x:.2}"), format!("{}", t / 40)]
            })
            .chain(["0.000", "1.000", "4.0", "10.0001", "-1.5", "-0.000001"].map(String::from))
            .collect();
        for (min, max) in cases {
            let g = grammar(min, max, false).unwrap();
            for s in &texts {
                if s == "-0"
                    || s.starts_with("-0") && s.trim_start_matches(['-', '0', '.']).is_empty()
                {
                    continue; // "-0", "-0.00": zero with a sign, refused by design
                }
                let x: f64 = s.parse().unwrap();
                let want = within(x, min, max);
                assert_eq!(accepts(&g, s), want, "{s} in {min:?}..{max:?}");
            }
        }
    }

    #[test]
    fn unbounded_numbers_are_json_numbers() {
        let mut b = Builder::new(100_000);
        let root = any(&mut b, false).unwrap();
        let g = Arc::new(b.build(root));
        for ok in ["0", "-0", "12", "-3.25", "1e5", "2.5E-3", "0.0"] {
            assert!(accepts(&g, ok), "{ok}");
        }
        for bad in ["01", "1.", ".5", "1e", "--1", "+1", "1.2.3"] {
            assert!(!accepts(&g, bad), "{bad}");
        }
        let long = "9".repeat(MAX_DIGITS + 1);
        assert!(!accepts(&g, &long), "digits are capped");
    }
}
