//! `Accept-Language` to a vendor language such as `en_US`.

use std::borrow::Cow;

/// The language used when the caller sends none, or none we can map.
pub const DEFAULT: &str = "en_US";

/// Regions for bare language tags, for the languages the vendors are known to serve.
const DEFAULT_REGIONS: &[(&str, &str)] = &[
    ("en", "en_US"),
    ("th", "th_TH"),
    ("zh", "zh_TW"),
    ("ja", "ja_JP"),
    ("ko", "ko_KR"),
    ("id", "id_ID"),
    ("ms", "ms_MY"),
    ("vi", "vi_VN"),
    ("tr", "tr_TR"),
    ("he", "he_IL"),
];

/// The languages a vendor that takes a fixed set serves, when its connection names none: those
/// the CBSS design notes name (`en_US`, `th_TH`, `zh_TW`). The first is the fallback.
pub const DEFAULT_SERVED: &[&str] = &["en_US", "th_TH", "zh_TW"];

/// Picks the caller's most preferred language that has a vendor form (highest q, first on ties)
/// and maps it to the `ll_RR` form. With `served` (a vendor whose `Language` is a fixed set), a
/// tag maps only to a served language: the same one, else the first served one of the same
/// language (`en-GB` to `en_US`), else the caller's next choice; with none, the first served.
/// Anything unparseable falls back to `DEFAULT` (or the first served); the result is always safe
/// to put in a URL query unescaped. The default and served forms are borrowed: most requests send
/// no `Accept-Language` and need no allocation for it.
pub fn vendor_language(
    accept_language: Option<&[u8]>,
    served: Option<&[&'static str]>,
) -> Cow<'static, str> {
    let fallback = || Cow::Borrowed(served.and_then(|s| s.first().copied()).unwrap_or(DEFAULT));
    let Some(raw) = accept_language.and_then(|b| std::str::from_utf8(b).ok()) else {
        return fallback();
    };
    let mut best: Option<(Cow<'static, str>, f32)> = None;
    for item in raw.split(',').take(16) {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        if tag.is_empty() || tag == "*" || q <= 0.0 || best.as_ref().is_some_and(|(_, bq)| q <= *bq)
        {
            continue;
        }
        let mapped = map_tag(tag).and_then(|form| match served {
            None => Some(form),
            Some(served) => served_form(&form, served).map(Cow::Borrowed),
        });
        if let Some(mapped) = mapped {
            best = Some((mapped, q));
        }
    }
    best.map_or_else(fallback, |(mapped, _)| mapped)
}

/// `form` (`ll_RR`) if it is served, else the first served language of the same `ll`.
fn served_form(form: &str, served: &[&'static str]) -> Option<&'static str> {
    let language = form.get(..3)?;
    served
        .iter()
        .find(|s| **s == form)
        .or_else(|| served.iter().find(|s| s.starts_with(language)))
        .copied()
}

/// Whether `lang` is in the `ll_RR` form: a two-letter language in lower case, `_`, a two-letter
/// region in upper case.
pub fn is_vendor_form(lang: &str) -> bool {
    let b = lang.as_bytes();
    b.len() == 5
        && b[..2].iter().all(u8::is_ascii_lowercase)
        && b[2] == b'_'
        && b[3..].iter().all(u8::is_ascii_uppercase)
}

fn map_tag(tag: &str) -> Option<Cow<'static, str>> {
    let mut pieces = tag.split(['-', '_']);
    let lang = pieces.next()?.to_ascii_lowercase();
    // Only two-letter languages: the vendor form is `ll_RR`, and a vendor that serves a handful
    // of languages refuses a three-letter one (`yue_HK`) rather than fall back to its default.
    if lang.len() != 2 || !lang.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    // The region is the first two-letter subtag after the language (skipping a script like Hant).
    let region = pieces.find(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_alphabetic()));
    match region {
        Some(r) => Some(Cow::Owned(format!("{lang}_{}", r.to_ascii_uppercase()))),
        None => DEFAULT_REGIONS
            .iter()
            .find(|(l, _)| *l == lang)
            .map(|(_, full)| Cow::Borrowed(*full)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vendor_language_any(accept: Option<&[u8]>) -> Cow<'static, str> {
        vendor_language(accept, None)
    }

    #[test]
    fn maps_tags_to_a_served_language_or_the_next_choice() {
        let served: &[&'static str] = &["en_US", "th_TH", "zh_TW"];
        let pick = |accept: &[u8]| vendor_language(Some(accept), Some(served));
        assert_eq!(pick(b"en-GB"), "en_US");
        assert_eq!(pick(b"en"), "en_US");
        assert_eq!(pick(b"de-DE, th;q=0.5"), "th_TH");
        assert_eq!(
            pick(b"en-GB, th-TH;q=0.9"),
            "en_US",
            "the same language first"
        );
        assert_eq!(pick(b"ja-JP"), "en_US");
        assert_eq!(pick(b"zh-Hant-TW"), "zh_TW");
        assert_eq!(pick(b"zh-CN"), "zh_TW");
        assert_eq!(vendor_language(None, Some(served)), "en_US");
        // The first served is the fallback, whatever it is.
        let thai_first: &[&'static str] = &["th_TH", "en_GB"];
        assert_eq!(vendor_language(None, Some(thai_first)), "th_TH");
        assert_eq!(
            vendor_language(Some(b"x-klingon"), Some(thai_first)),
            "th_TH"
        );
        assert_eq!(vendor_language(Some(b"en-US"), Some(thai_first)), "en_GB");
    }

    #[test]
    fn maps_tags_to_vendor_form() {
        assert_eq!(vendor_language_any(Some(b"th-TH")), "th_TH");
        assert_eq!(vendor_language_any(Some(b"en")), "en_US");
        assert_eq!(vendor_language_any(Some(b"zh-Hant-TW")), "zh_TW");
        assert_eq!(vendor_language_any(Some(b"fr;q=0.5, th;q=0.9")), "th_TH");
        assert_eq!(vendor_language_any(None), "en_US");
        assert_eq!(vendor_language_any(Some(b"x-klingon")), "en_US");
        assert_eq!(vendor_language_any(Some(b"../../etc")), "en_US");
        assert_eq!(vendor_language_any(Some(b"yue-HK")), "en_US");
        assert_eq!(vendor_language_any(Some(b"fil-PH")), "en_US");
        // A language with no vendor form gives way to the next one the caller accepts.
        assert_eq!(vendor_language_any(Some(b"fil-PH, th;q=0.5")), "th_TH");
        assert_eq!(vendor_language_any(Some(b"TH_th")), "th_TH");
    }

    /// Whatever the caller sends, the vendor gets `ll_RR`: the one form CBSS's samples show, and
    /// with CBSS's default set, one of the languages its sandbox takes.
    #[test]
    fn every_answer_has_the_vendor_form() {
        let inputs: &[&[u8]] = &[
            b"yue-Hant-HK",
            b"ZH-hant-tw",
            b"sr-Latn-RS;q=0.9, x-pig-latin",
            b"de-CH-1996",
            b"es-419",
            b"en-GB-oxendict, *;q=0.1",
            b"i-klingon",
            b"tlh",
            b"\xff\xfe",
            b"th;q=abc, ja;q=0.3",
            b"",
        ];
        for input in inputs {
            let lang = vendor_language_any(Some(input));
            assert!(
                is_vendor_form(&lang),
                "{:?} became {lang}",
                String::from_utf8_lossy(input)
            );
            let lang = vendor_language(Some(input), Some(DEFAULT_SERVED));
            assert!(
                crate::sandbox::cbss::language_ok(&lang),
                "{:?} became {lang}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
