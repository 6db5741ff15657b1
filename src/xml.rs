//! A small, bounded XML reader for vendor answers and sandbox requests.
//!
//! It builds a tree of elements by local name, each with the namespace its prefix (or the default
//! namespace in scope) resolves to: readers look children up by local name, as DataContract XML
//! puts namespaces everywhere, and a strict reader (the sandbox's) can check them too. Attributes
//! keep their namespace as well (none when unprefixed: a default namespace does not apply to
//! them), so `attribute` finds only an unqualified one and `is_nil` only XML Schema's own `nil`;
//! a prefix declared nowhere in scope, a declaration the namespaces rules forbid or a name that
//! is not a qualified name makes the document malformed, as it is to .NET's readers. It refuses
//! DOCTYPE declarations and any entity beyond XML's five predefined ones
//! (so nothing is ever expanded), and stops at fixed depth and size limits. What it keeps grows
//! with the document and no faster: a namespace is held once, however many elements are in it,
//! and an element's attributes are bounded, since the parser checks each against the ones
//! before it.

use std::sync::Arc;

use quick_xml::events::Event;
use quick_xml::Reader;

const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 2_000;
/// Attributes of one element, namespace declarations included: the parser's duplicate check
/// compares each with every one before it.
const MAX_ATTRIBUTES: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    /// The namespace the element's name is in (empty for none):
    /// shared with the declaration, so a long one in scope of many elements is stored once.
    pub namespace: Arc<str>,
    pub attributes: Vec<Attribute>,
    pub children: Vec<Element>,
    pub text: String,
}

/// One attribute of an element (namespace declarations are not attributes here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribute {
    /// The namespace its prefix resolves to; empty for an unprefixed attribute.
    pub namespace: Arc<str>,
    pub name: String,
    pub value: String,
}

/// XML Schema's instance namespace, where `nil` is DataContract's and XmlSerializer's null.
pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// The namespace the `xml` prefix is bound to without a declaration.
const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";

impl Element {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The trimmed text of the first child with this local name: lenient, for reading answers.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    /// The exact text of the first child with this local name, spaces at its ends kept, as .NET's
    /// serializers read a string member: for reading requests as a vendor would.
    pub fn child_value(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The value of the unqualified attribute with this name: `p:Salt` is another attribute
    /// than `Salt`, whatever `p` is bound to.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attribute_in("", name)
    }

    /// The value of the attribute with this name in this namespace.
    pub fn attribute_in(&self, namespace: &str, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name == name && &*a.namespace == namespace)
            .map(|a| a.value.as_str())
    }

    /// True when the element carries XML Schema's `nil="true"` (written `i:nil` by
    /// DataContract, `xsi:nil` by XmlSerializer): a `nil` in any other namespace is not null.
    pub fn is_nil(&self) -> bool {
        self.attribute_in(XSI, "nil") == Some("true")
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
    #[error("an XML element has more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    /// What is wrong, in fixed words: never the parser's own message, which quotes the input (and a
    /// vendor's answer may quote what the caller sent).
    #[error("the XML is not well-formed: {0}")]
    Malformed(&'static str),
    #[error("the XML has no root element")]
    Empty,
}

/// The namespace declarations in scope, innermost last: `(prefix, namespace)`, the default
/// namespace under the empty prefix.
type Scope = Vec<(String, Arc<str>)>;

const NOT_QUALIFIED: XmlError = XmlError::Malformed("a name that is not a qualified name");

/// Splits a qualified name at its colon: `(prefix, local)`, the prefix empty when there is none.
/// A name with an empty prefix or local part, or a second colon, is no qualified name.
fn split(qualified: &[u8]) -> Result<(&[u8], &[u8]), XmlError> {
    let (prefix, local) = match qualified.iter().position(|&b| b == b':') {
        Some(0) => return Err(NOT_QUALIFIED),
        Some(i) => (&qualified[..i], &qualified[i + 1..]),
        None => (&[][..], qualified),
    };
    if local.is_empty() || local.contains(&b':') {
        return Err(NOT_QUALIFIED);
    }
    Ok((prefix, local))
}

/// The scope every document starts with: the `xml` prefix, bound without a declaration.
fn initial_scope() -> Scope {
    vec![("xml".to_string(), Arc::from(XML_NAMESPACE))]
}

/// Adds a declaration of `prefix` (empty: the default namespace) to `scope`. A prefix may not be
/// bound to no namespace (only the default namespace may be undeclared so), `xmlns` may not be
/// declared, and `xml` only to its own namespace.
fn declare(scope: &mut Scope, prefix: &[u8], namespace: &str) -> Result<(), XmlError> {
    let reserved = prefix == b"xmlns" || (prefix == b"xml") != (namespace == XML_NAMESPACE);
    if reserved || (!prefix.is_empty() && namespace.is_empty()) {
        return Err(XmlError::Malformed("a namespace declaration XML forbids"));
    }
    scope.push((
        String::from_utf8_lossy(prefix).into_owned(),
        Arc::from(namespace),
    ));
    Ok(())
}

/// The namespace `prefix` is bound to in `scope` (the empty prefix: the default namespace, or
/// none), or `None` for a prefix declared nowhere in scope.
fn resolve(scope: &Scope, prefix: &[u8]) -> Option<Arc<str>> {
    match scope.iter().rev().find(|(p, _)| p.as_bytes() == prefix) {
        Some((_, ns)) => Some(Arc::clone(ns)),
        None if prefix.is_empty() => Some(Arc::default()),
        None => None,
    }
}

/// Opens an element: its namespace declarations join `scope` (the caller takes them off again
/// when the element ends), then its name's prefix and its attributes' are resolved in it. An
/// element may declare a prefix after an attribute that uses it, so attributes are resolved only
/// once all its declarations are in.
fn open(e: &quick_xml::events::BytesStart<'_>, scope: &mut Scope) -> Result<Element, XmlError> {
    const UNDECLARED: XmlError = XmlError::Malformed("an undeclared namespace prefix");
    let qualified = e.name();
    let mut qualified_attributes: Vec<(&[u8], String, String)> = Vec::new();
    for (index, attr) in e.attributes().enumerate() {
        if index == MAX_ATTRIBUTES {
            return Err(XmlError::TooManyAttributes);
        }
        let attr = attr.map_err(|_| XmlError::Malformed("a malformed attribute"))?;
        let key = attr.key.into_inner();
        let value = attr
            .unescape_value()
            .map_err(|_| XmlError::Malformed("an unknown entity or character reference"))?;
        if key == b"xmlns" {
            declare(scope, b"", &value)?;
        } else if let Some(prefix) = key.strip_prefix(b"xmlns:") {
            // `xmlns:` with nothing after it, or `xmlns:a:b`, declares no prefix.
            if prefix.is_empty() || prefix.contains(&b':') {
                return Err(NOT_QUALIFIED);
            }
            declare(scope, prefix, &value)?;
        } else {
            let (prefix, name) = split(key)?;
            qualified_attributes.push((
                prefix,
                String::from_utf8_lossy(name).into_owned(),
                value.into_owned(),
            ));
        }
    }
    let (prefix, name) = split(qualified.as_ref())?;
    let mut el = Element {
        name: String::from_utf8_lossy(name).into_owned(),
        namespace: resolve(scope, prefix).ok_or(UNDECLARED)?,
        ..Element::default()
    };
    for (prefix, name, value) in qualified_attributes {
        // Unprefixed, an attribute is in no namespace: the default one is for element names.
        let namespace = if prefix.is_empty() {
            Arc::default()
        } else {
            resolve(scope, prefix).ok_or(UNDECLARED)?
        };
        // Two prefixes bound to one namespace make `a:x` and `b:x` one attribute twice, which
        // the parser's check of the names as written cannot see.
        if el.attribute_in(&namespace, &name).is_some() {
            return Err(XmlError::Malformed("an attribute given twice"));
        }
        el.attributes.push(Attribute {
            namespace,
            name,
            value,
        });
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
    // The length `scope` had before each open element's declarations joined it.
    let mut scope: Scope = initial_scope();
    let mut scope_marks: Vec<usize> = Vec::new();
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
                scope_marks.push(scope.len());
                stack.push(open(&e, &mut scope)?);
            }
            Event::Empty(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooLarge);
                }
                let mark = scope.len();
                let el = open(&e, &mut scope)?;
                scope.truncate(mark);
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or(XmlError::Malformed("an unbalanced end tag"))?;
                scope.truncate(scope_marks.pop().unwrap_or(0));
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
    fn each_element_knows_its_namespace() {
        let doc = br#"<a xmlns="urn:a" xmlns:p="urn:p">
  <b xmlns="urn:b"><p:c/><d/></b>
  <e/><p:f xmlns:p="urn:q"/><xml:h/>
</a>"#;
        let root = parse(doc).unwrap();
        let ns = |el: &Element| el.namespace.to_string();
        assert_eq!(ns(&root), "urn:a");
        let b = root.child("b").unwrap();
        assert_eq!(ns(b), "urn:b");
        assert_eq!(ns(b.child("c").unwrap()), "urn:p");
        assert_eq!(ns(b.child("d").unwrap()), "urn:b");
        // b's default namespace ended with b; a prefix redeclared on an element holds there.
        assert_eq!(ns(root.child("e").unwrap()), "urn:a");
        assert_eq!(ns(root.child("f").unwrap()), "urn:q");
        assert_eq!(ns(root.child("h").unwrap()), XML_NAMESPACE);
        assert_eq!(&*parse(b"<x/>").unwrap().namespace, "");
    }

    #[test]
    fn a_prefix_declared_nowhere_in_scope_is_malformed() {
        let undeclared = Err(XmlError::Malformed("an undeclared namespace prefix"));
        assert_eq!(parse(b"<a><g:h/></a>"), undeclared);
        assert_eq!(parse(b"<a g:x=\"1\"/>"), undeclared);
        // A declaration holds only within its element.
        assert_eq!(parse(b"<a><b xmlns:g=\"urn:g\"/><g:h/></a>"), undeclared);
        // Declared on the same element, before or after the attribute that uses it.
        assert!(parse(b"<a g:x=\"1\" xmlns:g=\"urn:g\"><g:h/></a>").is_ok());
    }

    #[test]
    fn attributes_are_found_by_namespace_and_name() {
        let doc = br#"<r xmlns="urn:d" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:p="urn:p" Salt="1" p:Salt="2" xsi:nil="true">
  <a xsi:Salt="3"/><b p:nil="true"/><c nil="true"/>
</r>"#;
        let root = parse(doc).unwrap();
        // The default namespace is for element names: an unprefixed attribute is in none.
        assert_eq!(root.attribute("Salt"), Some("1"));
        assert_eq!(root.attribute_in("urn:p", "Salt"), Some("2"));
        assert!(root.is_nil());
        let a = root.child("a").unwrap();
        assert_eq!(
            a.attribute("Salt"),
            None,
            "a prefixed attribute is another one"
        );
        assert_eq!(a.attribute_in(XSI, "Salt"), Some("3"));
        assert!(
            !root.child("b").unwrap().is_nil(),
            "nil outside XML Schema's namespace"
        );
        assert!(!root.child("c").unwrap().is_nil(), "nil in no namespace");
    }

    #[test]
    fn declarations_and_names_xml_forbids_are_malformed() {
        let forbidden = Err(XmlError::Malformed("a namespace declaration XML forbids"));
        // A prefix bound to no namespace (XML 1.1's undeclaring), `xmlns` declared, `xml`
        // bound elsewhere or another prefix (or the default) bound to `xml`'s namespace.
        for doc in [
            r#"<r xmlns:p="" p:Salt="3"/>"#,
            r#"<r xmlns:p="urn:p"><p:Key xmlns:p=""/></r>"#,
            r#"<r xmlns:xmlns="urn:x"/>"#,
            r#"<r xmlns:xml="urn:x"/>"#,
            r#"<r xmlns:x="http://www.w3.org/XML/1998/namespace"/>"#,
            r#"<r xmlns="http://www.w3.org/XML/1998/namespace"/>"#,
        ] {
            assert_eq!(parse(doc.as_bytes()), forbidden, "{doc}");
        }
        let not_qualified = Err(XmlError::Malformed("a name that is not a qualified name"));
        for doc in [
            r#"<r xmlns:="urn:x"/>"#,
            r#"<r xmlns:a:b="urn:x"/>"#,
            r#"<r :Salt="3"/>"#,
            r#"<r a:b:c="3" xmlns:a="urn:a"/>"#,
            r#"<a:b:c xmlns:a="urn:a"/>"#,
        ] {
            assert_eq!(parse(doc.as_bytes()), not_qualified, "{doc}");
        }
        // What XML allows: the default namespace undeclared, `xml` declared as itself.
        let allowed = r#"<r xmlns="urn:d" xmlns:xml="http://www.w3.org/XML/1998/namespace"><c xmlns="" xml:lang="th"/></r>"#;
        let root = parse(allowed.as_bytes()).unwrap();
        let child = root.child("c").unwrap();
        assert_eq!(&*child.namespace, "");
        assert_eq!(child.attribute_in(XML_NAMESPACE, "lang"), Some("th"));
    }

    #[test]
    fn one_attribute_under_two_prefixes_is_malformed() {
        let doc = br#"<r xmlns:a="urn:x" xmlns:b="urn:x" a:k="1" b:k="2"/>"#;
        assert_eq!(
            parse(doc),
            Err(XmlError::Malformed("an attribute given twice"))
        );
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
    fn a_namespace_is_stored_once_for_all_the_elements_in_it() {
        // A vendor's answer of 260 KB (under the response bound) whose 254 KB namespace is in
        // scope of 2,000 elements: copied into each, it would take half a gigabyte.
        let long = "u".repeat(254_000);
        let doc = format!("<r xmlns=\"{long}\">{}</r>", "<a/>".repeat(1_999));
        let root = parse(doc.as_bytes()).unwrap();
        assert_eq!(root.children.len(), 1_999);
        for child in &root.children {
            assert!(Arc::ptr_eq(&child.namespace, &root.namespace));
        }
    }

    #[test]
    fn an_element_with_too_many_attributes_is_refused() {
        // The parser checks each attribute against every one before it: tens of thousands on
        // one element would take seconds of a worker thread.
        let with = |n: usize| {
            let attributes: String = (0..n).map(|i| format!(" a{i}=\"\"")).collect();
            parse(format!("<r{attributes}/>").as_bytes())
        };
        assert_eq!(
            with(MAX_ATTRIBUTES).unwrap().attributes.len(),
            MAX_ATTRIBUTES
        );
        assert_eq!(with(MAX_ATTRIBUTES + 1), Err(XmlError::TooManyAttributes));
        assert_eq!(with(30_000), Err(XmlError::TooManyAttributes));
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
