//! A small, bounded XML reader for vendor answers and sandbox requests.
//!
//! It builds a tree of elements by local name (namespaces are ignored, as DataContract XML puts
//! them everywhere), refuses DOCTYPE declarations and any entity beyond XML's five predefined ones
//! (so nothing is ever expanded), and stops at fixed depth and size limits.

use quick_xml::events::Event;
use quick_xml::Reader;

const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 2_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The trimmed text of the first child with this local name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// True when the element carries `i:nil="true"` (DataContract's null).
    pub fn is_nil(&self) -> bool {
        self.attribute("nil") == Some("true")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("XML with a DOCTYPE is refused")]
    Doctype,
    #[error("the XML nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the XML has more than {MAX_ELEMENTS} elements")]
    TooLarge,
    /// What is wrong, in fixed words: never the parser's own message, which quotes the input (and a
    /// vendor's answer may quote what the caller sent).
    #[error("the XML is not well-formed: {0}")]
    Malformed(&'static str),
    #[error("the XML has no root element")]
    Empty,
}

fn local(name: &[u8]) -> String {
    let name = match name.iter().rposition(|&b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    String::from_utf8_lossy(name).into_owned()
}

fn open(e: &quick_xml::events::BytesStart<'_>) -> Result<Element, XmlError> {
    let mut el = Element {
        name: local(e.name().as_ref()),
        ..Element::default()
    };
    for attr in e.attributes() {
        let attr = attr.map_err(|_| XmlError::Malformed("a malformed attribute"))?;
        let key = attr.key.as_ref();
        if key == b"xmlns" || key.starts_with(b"xmlns:") {
            continue;
        }
        let value = attr
            .unescape_value()
            .map_err(|_| XmlError::Malformed("an unknown entity or character reference"))?;
        el.attributes.push((local(key), value.into_owned()));
    }
    Ok(el)
}

/// The kind of a parser error, in words that quote nothing of the input.
fn describe(e: &quick_xml::Error) -> &'static str {
    match e {
        quick_xml::Error::Syntax(_) => "a syntax error",
        quick_xml::Error::IllFormed(_) => "mismatched or misplaced markup",
        quick_xml::Error::InvalidAttr(_) => "a malformed attribute",
        quick_xml::Error::Escape(_) => "an unknown entity or character reference",
        quick_xml::Error::Encoding(_) => "text that is not UTF-8",
        _ => "an unreadable document",
    }
}

/// Parses a whole document into its root element.
pub fn parse(input: &[u8]) -> Result<Element, XmlError> {
    let text = std::str::from_utf8(input).map_err(|_| XmlError::Malformed("not UTF-8"))?;
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError::Malformed(describe(&e)))?;
        match event {
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                let _ = e;
                return Err(XmlError::Malformed("content after the root element"));
            }
            Event::Start(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooLarge);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                stack.push(open(&e)?);
            }
            Event::Empty(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooLarge);
                }
                let el = open(&e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or(XmlError::Malformed("an unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let s = t.unescape().map_err(|_| {
                        XmlError::Malformed("an unknown entity or character reference")
                    })?;
                    top.text.push_str(&s);
                } else if !t.iter().all(|b| b.is_ascii_whitespace()) {
                    return Err(XmlError::Malformed("text outside the root element"));
                }
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&c));
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed("an unclosed element"));
    }
    root.ok_or(XmlError::Empty)
}

/// Escapes text for an element's content or an attribute value.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_datacontract_by_local_name() {
        let doc =
            br#"<ChangePassword xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns="urn:a">
  <ClientCode xmlns="urn:b">C &amp; D</ClientCode>
  <Content xmlns:d2p1="urn:c" xmlns="urn:b"><d2p1:NewPassword>p</d2p1:NewPassword></Content>
  <Other i:nil="true"/>
</ChangePassword>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "ChangePassword");
        assert_eq!(root.child_text("ClientCode"), Some("C & D"));
        assert_eq!(
            root.child("Content").unwrap().child_text("NewPassword"),
            Some("p")
        );
        assert!(root.child("Other").unwrap().is_nil());
    }

    #[test]
    fn refuses_doctype_and_custom_entities() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><a>&x;</a>"#;
        assert_eq!(parse(bomb), Err(XmlError::Doctype));
        assert!(parse(b"<a>&x;</a>").is_err());
        // A DOCTYPE after a comment is still refused; one inside a comment is the comment's
        // text. `<!-->` does not close the comment it opens (the fuzzer found a checker that
        // thought it did).
        assert_eq!(parse(b"<!----><!DOCTYPE a><a/>"), Err(XmlError::Doctype));
        let commented = parse(b"<a><!--><!DOCTYPE a>-->t</a>").unwrap();
        assert_eq!(commented.name, "a");
        assert!(commented.children.is_empty());
        assert_eq!(commented.text, "t");
    }

    #[test]
    fn refuses_deep_nesting_and_garbage() {
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooDeep));
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"not xml").is_err());
        assert!(parse(b"").is_err());
    }
}
