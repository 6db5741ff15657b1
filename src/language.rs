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

/// Picks the caller's most preferred language that has a vendor form (highest q, first on ties)
/// and maps it to the `ll_RR` form. Anything unparseable falls back to `DEFAULT`; the result is
/// always safe to put in a URL query unescaped. The default and the bare-language forms are
/// borrowed: most requests send no `Accept-Language` and need no allocation for it.
pub fn vendor_language(accept_language: Option<&[u8]>) -> Cow<'static, str> {
    let Some(raw) = accept_language.and_then(|b| std::str::from_utf8(b).ok()) else {
        return Cow::Borrowed(DEFAULT);
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
        if let Some(mapped) = map_tag(tag) {
            best = Some((mapped, q));
        }
    }
    best.map_or(Cow::Borrowed(DEFAULT), |(mapped, _)| mapped)
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

    #[test]
    fn maps_tags_to_vendor_form() {
        assert_eq!(vendor_language(Some(b"th-TH")), "th_TH");
        assert_eq!(vendor_language(Some(b"en")), "en_US");
        assert_eq!(vendor_language(Some(b"zh-Hant-TW")), "zh_TW");
        assert_eq!(vendor_language(Some(b"fr;q=0.5, th;q=0.9")), "th_TH");
        assert_eq!(vendor_language(None), "en_US");
        assert_eq!(vendor_language(Some(b"x-klingon")), "en_US");
        assert_eq!(vendor_language(Some(b"../../etc")), "en_US");
        assert_eq!(vendor_language(Some(b"yue-HK")), "en_US");
        assert_eq!(vendor_language(Some(b"fil-PH")), "en_US");
        // A language with no vendor form gives way to the next one the caller accepts.
        assert_eq!(vendor_language(Some(b"fil-PH, th;q=0.5")), "th_TH");
        assert_eq!(vendor_language(Some(b"TH_th")), "th_TH");
    }

    /// Whatever the caller sends, the vendor gets `ll_RR`: the one form CBSS's samples show, as
    /// its sandbox checks it.
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
            let lang = vendor_language(Some(input));
            assert!(
                crate::sandbox::cbss::language_ok(&lang),
                "{:?} became {lang}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
