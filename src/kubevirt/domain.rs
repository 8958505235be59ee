//! The one edit the gateway makes to a libvirt domain at `OnDefineDomain`: a virtio-serial
//! channel named [`CHANNEL_NAME`], bound to a unix socket in the hooks directory, for the
//! guest's second qemu-ga (docs/kubevirt.md, "The private agent channel").
//!
//! The XML is read with a real parser (the whole document is read: tags well formed, end
//! tags matching, one root), but it is edited by byte offset: the channel's text is spliced
//! in before `</devices>` and every other byte comes back as it was. Re-serialising a parsed tree would reorder attributes,
//! change quoting and drop comments in a document libvirt and KubeVirt care about.

use quick_xml::XmlVersion;
use quick_xml::escape::escape;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

/// The guest-side name of the gateway's channel. `org.qemu.guest_agent.0` belongs to
/// libvirt and virt-handler and is never touched.
pub(crate) const CHANNEL_NAME: &str = "org.qemu.guest_agent.1";

/// Why a domain could not be given the channel. Each names what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DomainError {
    #[error("domain XML is not UTF-8 (at byte {0})")]
    NotUtf8(usize),
    #[error("domain XML is malformed at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    #[error("domain XML: the root element is <{0}>, expected <domain>")]
    NotADomain(String),
    #[error("domain XML has no <devices> element under <domain>")]
    NoDevices,
    #[error("domain XML has more than one <devices> element under <domain>")]
    SecondDevices,
    #[error(
        "domain XML already has a channel named {CHANNEL_NAME} ({found}), not the gateway's \
         (unix, bind, {wanted:?}): another hook uses the name"
    )]
    ChannelTaken { found: String, wanted: String },
}

/// The domain after the edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EditedDomain {
    pub xml: String,
    /// False when the domain already had the channel (a migration target's second
    /// `OnDefineDomain`): then `xml` is the input unchanged.
    pub added: bool,
}

/// Adds the channel bound to `socket_path` (the path as QEMU, in the compute container,
/// sees it), once: a domain that already has it is returned unchanged.
pub(crate) fn add_agent_channel(
    xml: &[u8],
    socket_path: &str,
) -> Result<EditedDomain, DomainError> {
    let text = std::str::from_utf8(xml).map_err(|e| DomainError::NotUtf8(e.valid_up_to()))?;
    // quick-xml skips a byte-order mark without counting it in its positions: parse and
    // edit what follows it, and put it back.
    let (bom, body) = match text.strip_prefix('\u{feff}') {
        Some(body) => ("\u{feff}", body),
        None => ("", text),
    };
    let layout = read_layout(body)?;
    if let Some(existing) = layout.existing_channel {
        let ours = existing.kind.as_deref() == Some("unix")
            && existing.source_mode.as_deref() == Some("bind")
            && existing.source_path.as_deref() == Some(socket_path);
        if ours {
            return Ok(EditedDomain {
                xml: text.to_string(),
                added: false,
            });
        }
        return Err(DomainError::ChannelTaken {
            found: existing.describe(),
            wanted: socket_path.to_string(),
        });
    }
    let edited = match layout.devices {
        Devices::Closing(at) => insert_before_close(body, at, socket_path),
        Devices::Empty { start, end } => {
            body.get(..start)
                .zip(body.get(end..))
                .map(|(before, after)| {
                    format!(
                        "{before}<devices>{}</devices>{after}",
                        channel_element(socket_path, None)
                    )
                })
        }
        Devices::Missing => return Err(DomainError::NoDevices),
    };
    // Positions come from the parser on the same text, at `<`: always char boundaries.
    let edited = edited.ok_or_else(|| malformed(0, "internal error: bad offset".into()))?;
    Ok(EditedDomain {
        xml: format!("{bom}{edited}"),
        added: true,
    })
}

/// Where `<domain>`'s `<devices>` ends, and whether our channel is in it.
struct Layout {
    devices: Devices,
    /// The channel named [`CHANNEL_NAME`], when the domain has one.
    existing_channel: Option<ChannelSeen>,
}

enum Devices {
    Missing,
    /// Byte offset of `</devices>`.
    Closing(usize),
    /// `<devices/>`, by its byte range.
    Empty {
        start: usize,
        end: usize,
    },
}

/// A `<channel>` of `<devices>` being read.
#[derive(Default)]
struct ChannelSeen {
    kind: Option<String>,
    target_name: Option<String>,
    source_mode: Option<String>,
    source_path: Option<String>,
}

impl ChannelSeen {
    fn describe(&self) -> String {
        let shown = |value: &Option<String>| value.as_deref().unwrap_or("-").to_string();
        format!(
            "type {}, source mode {}, path {}",
            shown(&self.kind),
            shown(&self.source_mode),
            self.source_path
                .as_ref()
                .map_or_else(|| "-".to_string(), |p| format!("{p:?}"))
        )
    }
}

/// Reads the whole document, so that malformed XML anywhere is refused, and records the
/// few things the edit needs.
fn read_layout(text: &str) -> Result<Layout, DomainError> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<String> = Vec::new();
    let mut root_seen = false;
    let mut layout = Layout {
        devices: Devices::Missing,
        existing_channel: None,
    };
    let mut channel: Option<ChannelSeen> = None;
    loop {
        let before = position(&reader);
        let event = reader
            .read_event()
            .map_err(|error| DomainError::Malformed {
                position: reader.error_position(),
                message: error.to_string(),
            })?;
        let (element, empty) = match event {
            Event::Start(element) => (element, false),
            Event::Empty(element) => (element, true),
            Event::End(_) => {
                // quick-xml has checked that the end tag matches.
                let name = stack.pop().unwrap_or_default();
                if in_domain(&stack) && name == "devices" {
                    if !matches!(layout.devices, Devices::Missing) {
                        return Err(DomainError::SecondDevices);
                    }
                    layout.devices = Devices::Closing(before);
                }
                if in_devices(&stack) && name == "channel" {
                    finish_channel(channel.take(), &mut layout);
                }
                continue;
            }
            Event::Text(content)
                if stack.is_empty()
                    && !content.as_ref().chars().all(|c| c.is_ascii_whitespace()) =>
            {
                return Err(malformed(before, "text outside the root element".into()));
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = name_of(&element);
        if stack.is_empty() {
            if root_seen {
                return Err(malformed(before, format!("a second root element <{name}>")));
            }
            root_seen = true;
            if name != "domain" {
                return Err(DomainError::NotADomain(name));
            }
        }
        read_element(&stack, &name, &element, &mut channel, before)?;
        if !empty {
            stack.push(name);
            continue;
        }
        if in_domain(&stack) && name == "devices" {
            if !matches!(layout.devices, Devices::Missing) {
                return Err(DomainError::SecondDevices);
            }
            layout.devices = Devices::Empty {
                start: before,
                end: position(&reader),
            };
        }
        if in_devices(&stack) && name == "channel" {
            finish_channel(channel.take(), &mut layout);
        }
    }
    if let Some(open) = stack.last() {
        return Err(malformed(
            position(&reader),
            format!("the document ends inside <{open}>"),
        ));
    }
    if !root_seen {
        return Err(malformed(0, "no root element".into()));
    }
    Ok(layout)
}

/// Records what a channel's children say; starts a channel at `<devices><channel>`.
fn read_element(
    stack: &[String],
    name: &str,
    element: &BytesStart<'_>,
    channel: &mut Option<ChannelSeen>,
    at: usize,
) -> Result<(), DomainError> {
    if in_devices(stack) && name == "channel" {
        *channel = Some(ChannelSeen {
            kind: attribute(element, "type", at)?,
            ..ChannelSeen::default()
        });
        return Ok(());
    }
    let inside_channel = stack.len() == 3 && in_devices(&stack[..2]) && stack[2] == "channel";
    if let (true, Some(seen)) = (inside_channel, channel.as_mut()) {
        match name {
            "target" => seen.target_name = attribute(element, "name", at)?,
            "source" => {
                seen.source_mode = attribute(element, "mode", at)?;
                seen.source_path = attribute(element, "path", at)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn finish_channel(channel: Option<ChannelSeen>, layout: &mut Layout) {
    if let Some(seen) = channel
        && seen.target_name.as_deref() == Some(CHANNEL_NAME)
    {
        layout.existing_channel = Some(seen);
    }
}

fn attribute(
    element: &BytesStart<'_>,
    key: &str,
    at: usize,
) -> Result<Option<String>, DomainError> {
    let bad = |error: &dyn std::fmt::Display| {
        malformed(
            at,
            format!("<{}> attribute {key}: {error}", name_of(element)),
        )
    };
    match element.try_get_attribute(key) {
        Ok(Some(attribute)) => attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map(|value| Some(value.into_owned()))
            .map_err(|e| bad(&e)),
        Ok(None) => Ok(None),
        Err(error) => Err(bad(&error)),
    }
}

fn in_domain(stack: &[String]) -> bool {
    stack.len() == 1 && stack[0] == "domain"
}

fn in_devices(stack: &[String]) -> bool {
    stack.len() == 2 && stack[0] == "domain" && stack[1] == "devices"
}

/// The element's qualified name: libvirt's elements have no prefix, so `<qemu:devices>`
/// is not `<devices>`.
fn name_of(element: &BytesStart<'_>) -> String {
    element.name().as_ref().to_string()
}

fn position(reader: &Reader<&[u8]>) -> usize {
    usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX)
}

fn malformed(at: usize, message: String) -> DomainError {
    DomainError::Malformed {
        position: at as u64,
        message,
    }
}

/// Splices the channel in before `</devices>` at byte `at`, indented like its siblings
/// (and with the document's line ending) when `</devices>` starts its own line. `None` if
/// `at` is not a char boundary.
fn insert_before_close(text: &str, at: usize, socket_path: &str) -> Option<String> {
    let (head, tail) = text.split_at_checked(at)?;
    let line_start = head.rfind('\n').map_or(0, |i| i + 1);
    let (lines, indent) = head.split_at_checked(line_start)?;
    if !indent.is_empty() && indent.chars().all(|c| c == ' ' || c == '\t') {
        let unit = if indent.contains('\t') { "\t" } else { "  " };
        let newline = if lines.ends_with("\r\n") {
            "\r\n"
        } else {
            "\n"
        };
        let child = format!("{indent}{unit}");
        let element = channel_element(socket_path, Some((&child, unit)));
        Some(format!(
            "{lines}{}{newline}{indent}{tail}",
            element.replace('\n', newline)
        ))
    } else {
        Some(format!(
            "{head}{}{tail}",
            channel_element(socket_path, None)
        ))
    }
}

/// The channel element, as libvirt documents it for a unix channel QEMU binds. `pretty`
/// gives the indentation of the element and one level.
fn channel_element(socket_path: &str, pretty: Option<(&str, &str)>) -> String {
    let path = escape(socket_path);
    let (open, inner, close) = match pretty {
        Some((indent, unit)) => (
            indent.to_string(),
            format!("\n{indent}{unit}"),
            format!("\n{indent}"),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    format!(
        "{open}<channel type=\"unix\">{inner}<source mode=\"bind\" path=\"{path}\"/>{inner}\
         <target type=\"virtio\" name=\"{CHANNEL_NAME}\"/>{close}</channel>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/var/run/kubevirt-hooks/hook-sidecar-0/probe-gateway-qga.sock";

    #[test]
    fn the_channel_goes_before_the_end_of_devices_indented_like_its_siblings() {
        let xml = "<domain type=\"kvm\">\n  <devices>\n    <disk/>\n  </devices>\n</domain>";
        let edited = add_agent_channel(xml.as_bytes(), PATH).unwrap();
        assert!(edited.added);
        assert_eq!(
            edited.xml,
            format!(
                "<domain type=\"kvm\">\n  <devices>\n    <disk/>\n    <channel type=\"unix\">\n      \
                 <source mode=\"bind\" path=\"{PATH}\"/>\n      <target type=\"virtio\" \
                 name=\"org.qemu.guest_agent.1\"/>\n    </channel>\n  </devices>\n</domain>"
            )
        );
    }

    #[test]
    fn compact_xml_gets_a_compact_channel() {
        let xml = "<domain><devices><disk/></devices></domain>";
        let edited = add_agent_channel(xml.as_bytes(), "/a b&c.sock").unwrap();
        assert_eq!(
            edited.xml,
            "<domain><devices><disk/><channel type=\"unix\"><source mode=\"bind\" \
             path=\"/a b&amp;c.sock\"/><target type=\"virtio\" name=\"org.qemu.guest_agent.1\"/>\
             </channel></devices></domain>"
        );
    }

    #[test]
    fn an_empty_devices_element_is_opened() {
        let edited = add_agent_channel(b"<domain><devices/></domain>", PATH).unwrap();
        assert!(
            edited
                .xml
                .starts_with("<domain><devices><channel type=\"unix\">")
        );
        assert!(edited.xml.ends_with("</channel></devices></domain>"));
    }

    #[test]
    fn a_domain_with_the_channel_is_returned_unchanged() {
        let xml = "<domain><devices><disk/></devices></domain>";
        let once = add_agent_channel(xml.as_bytes(), PATH).unwrap();
        let twice = add_agent_channel(once.xml.as_bytes(), PATH).unwrap();
        assert!(!twice.added);
        assert_eq!(twice.xml, once.xml);
    }

    #[test]
    fn a_channel_of_that_name_bound_elsewhere_is_refused() {
        let xml = "<domain><devices><channel type='unix'><source mode='bind' path='/x.sock'/>\
                   <target type='virtio' name='org.qemu.guest_agent.1'/></channel></devices></domain>";
        let error = add_agent_channel(xml.as_bytes(), PATH).unwrap_err();
        assert_eq!(
            error,
            DomainError::ChannelTaken {
                found: "type unix, source mode bind, path \"/x.sock\"".into(),
                wanted: PATH.into()
            }
        );
        // Our path, but QEMU would connect instead of binding: not ours either.
        let connect = format!(
            "<domain><devices><channel type='unix'><source mode='connect' path='{PATH}'/>\
             <target type='virtio' name='org.qemu.guest_agent.1'/></channel></devices></domain>"
        );
        assert!(matches!(
            add_agent_channel(connect.as_bytes(), PATH),
            Err(DomainError::ChannelTaken { .. })
        ));
    }

    #[test]
    fn a_byte_order_mark_is_kept_and_does_not_shift_the_edit() {
        let xml = "\u{feff}<domain><devices>\u{20ac}x</devices></domain>";
        let edited = add_agent_channel(xml.as_bytes(), PATH).unwrap();
        assert!(
            edited
                .xml
                .starts_with("\u{feff}<domain><devices>\u{20ac}x<channel ")
        );
        assert!(edited.xml.ends_with("</channel></devices></domain>"));
    }

    #[test]
    fn crlf_documents_get_crlf_lines() {
        let xml = "<domain>\r\n  <devices>\r\n    <disk/>\r\n  </devices>\r\n</domain>";
        let edited = add_agent_channel(xml.as_bytes(), PATH).unwrap();
        assert!(
            !edited.xml.replace("\r\n", "").contains('\n'),
            "{:?}",
            edited.xml
        );
        assert!(
            edited
                .xml
                .contains("    <channel type=\"unix\">\r\n      <source")
        );
    }

    #[test]
    fn prefixed_elements_are_not_libvirts() {
        let xml = "<domain xmlns:x='urn:x'><x:devices/><devices/></domain>";
        let edited = add_agent_channel(xml.as_bytes(), PATH).unwrap();
        assert!(
            edited
                .xml
                .starts_with("<domain xmlns:x='urn:x'><x:devices/><devices><channel")
        );
        assert_eq!(
            add_agent_channel(b"<x:domain xmlns:x='urn:x'/>", PATH),
            Err(DomainError::NotADomain("x:domain".into()))
        );
    }

    #[test]
    fn two_devices_elements_are_refused() {
        assert_eq!(
            add_agent_channel(b"<domain><devices/><devices></devices></domain>", PATH),
            Err(DomainError::SecondDevices)
        );
    }

    #[test]
    fn the_primary_agent_channel_is_not_taken_for_ours() {
        let xml = "<domain><devices><channel type='unix'><target type='virtio' \
                   name='org.qemu.guest_agent.0'/></channel></devices></domain>";
        let edited = add_agent_channel(xml.as_bytes(), PATH).unwrap();
        assert!(edited.added);
        assert_eq!(edited.xml.matches("<channel").count(), 2);
    }

    #[test]
    fn devices_outside_the_domain_element_do_not_count() {
        let xml = "<domain><metadata><devices></devices></metadata></domain>";
        assert_eq!(
            add_agent_channel(xml.as_bytes(), PATH),
            Err(DomainError::NoDevices)
        );
    }

    #[test]
    fn malformed_xml_is_refused_with_a_position() {
        for (xml, expected) in [
            ("<domain><devices></domain>", "malformed"),
            ("<domain><devices></devices>", "ends inside <domain>"),
            ("<domain/><domain/>", "a second root element"),
            ("", "no root element"),
            (
                "<domain><devices><channel><target name='x/></channel></devices></domain>",
                "malformed",
            ),
            ("junk<domain/>", "text outside the root element"),
        ] {
            let error = add_agent_channel(xml.as_bytes(), PATH)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{xml:?}: {error}");
        }
    }

    #[test]
    fn a_document_that_is_not_a_domain_is_refused() {
        assert_eq!(
            add_agent_channel(b"<network/>", PATH),
            Err(DomainError::NotADomain("network".into()))
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused() {
        assert_eq!(
            add_agent_channel(b"<domain>\xff</domain>", PATH),
            Err(DomainError::NotUtf8(8))
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        const FIXTURE: &str = include_str!("../../tests/hook/fixtures/domain.xml");

        proptest! {
            /// Any bytes: an answer or an error, never a panic; an added channel is the
            /// only difference, and a second edit changes nothing.
            #[test]
            fn any_input_is_edited_once_or_refused(
                cut in 0..FIXTURE.len(),
                noise in "[<>/a-z\"'= \n\u{feff}\u{20ac}]{0,12}",
            ) {
                let mut xml = FIXTURE.as_bytes()[..cut].to_vec();
                xml.extend_from_slice(noise.as_bytes());
                xml.extend_from_slice(&FIXTURE.as_bytes()[cut..]);
                if let Ok(edited) = add_agent_channel(&xml, PATH) {
                    let again = add_agent_channel(edited.xml.as_bytes(), PATH).unwrap();
                    prop_assert!(!again.added);
                    prop_assert_eq!(&again.xml, &edited.xml);
                    if edited.added {
                        let input = String::from_utf8(xml).unwrap();
                        let start = input
                            .bytes()
                            .zip(edited.xml.bytes())
                            .position(|(a, b)| a != b)
                            .unwrap_or(input.len());
                        let added = edited.xml.len() - input.len();
                        let rest = format!("{}{}", &edited.xml[..start], &edited.xml[start + added..]);
                        prop_assert_eq!(rest, input);
                    }
                }
            }
        }
    }
}
