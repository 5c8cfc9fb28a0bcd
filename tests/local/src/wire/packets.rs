//! The MySQL client/server protocol's packets, as far as counting commands needs them: framing,
//! which client packets are commands and of what kind, and where the login ends.

use super::WireCounts;

/// A packet's payload of this length continues in the next packet (payloads of 16 MiB and more).
const MAX_PAYLOAD: usize = 0xff_ff_ff;
const COM_QUERY: u8 = 0x03;
const COM_PING: u8 = 0x0e;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
/// The capability flag of a client's SSLRequest: what follows it is a TLS handshake.
const CLIENT_SSL: u32 = 0x0800;
/// An SSLRequest is the first 32 bytes of a handshake response, with nothing after them.
const SSL_REQUEST_LEN: usize = 32;

/// One direction's byte stream cut into packets (4-byte header: length, 3 bytes little-endian,
/// then the sequence id).
#[derive(Default)]
pub(super) struct Packets {
    buffer: Vec<u8>,
}

impl Packets {
    /// Adds `bytes` and calls `each` with every packet now whole: its sequence id and payload.
    pub(super) fn feed(&mut self, bytes: &[u8], mut each: impl FnMut(u8, &[u8])) {
        self.buffer.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(header) = self.buffer.get(start..start + 4) {
            let len =
                usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
            let seq = header[3];
            let Some(payload) = self.buffer.get(start + 4..start + 4 + len) else {
                break;
            };
            each(seq, payload);
            start += 4 + len;
        }
        self.buffer.drain(..start);
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stream {
    Plain,
    Encrypted,
}

/// What the client sends: commands, once logged in.
#[derive(Default)]
pub(super) struct ClientHalf {
    packets: Packets,
    /// The packet read last was 16 MiB - 1 long: the next one continues it, whatever its
    /// sequence id. For a query, its text so far.
    continued: Option<Option<Vec<u8>>>,
    /// A packet was seen: the next is not the connection's first.
    started: bool,
}

impl ClientHalf {
    pub(super) fn feed(
        &mut self,
        bytes: &[u8],
        logged_in: bool,
        counts: &mut WireCounts,
    ) -> Stream {
        let mut stream = Stream::Plain;
        let Self {
            packets,
            continued,
            started,
        } = self;
        packets.feed(bytes, |seq, payload| {
            if stream == Stream::Encrypted {
                return;
            }
            let first = !std::mem::replace(started, true);
            let continues = payload.len() == MAX_PAYLOAD;
            if let Some(query) = continued.take() {
                let query = query.map(|mut text| {
                    text.extend_from_slice(payload);
                    text
                });
                match (continues, query) {
                    (true, query) => *continued = Some(query),
                    (false, Some(text)) => counts.query_texts.push(lossy(&text)),
                    (false, None) => {}
                }
                return;
            }
            if !logged_in {
                if first && seq == 1 && is_ssl_request(payload) {
                    stream = Stream::Encrypted;
                }
                if continues {
                    *continued = Some(None);
                }
                return;
            }
            if seq != 0 {
                // Not a command: data a command asked for (a local file's contents, a
                // re-authentication after COM_CHANGE_USER).
                if continues {
                    *continued = Some(None);
                }
                return;
            }
            if payload.first() == Some(&COM_QUERY)
                && payload[1..].starts_with(shared::store::pool::LEND_CHECK.as_bytes())
            {
                counts.lend_checks += 1;
                return;
            }
            counts.commands += 1;
            let mut text = None;
            match payload.first() {
                Some(&COM_QUERY) => {
                    counts.queries += 1;
                    text = Some(payload[1..].to_vec());
                }
                Some(&COM_STMT_PREPARE) => counts.prepares += 1,
                Some(&COM_STMT_EXECUTE) => counts.executes += 1,
                Some(&COM_PING) => counts.pings += 1,
                _ => counts.others += 1,
            }
            match (continues, text) {
                (true, text) => *continued = Some(text),
                (false, Some(text)) => counts.query_texts.push(lossy(&text)),
                (false, None) => {}
            }
        });
        stream
    }
}

fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == SSL_REQUEST_LEN
        && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) & CLIENT_SSL != 0
}

fn lossy(text: &[u8]) -> String {
    String::from_utf8_lossy(text).into_owned()
}

/// What the server sends while a client logs in: its greeting, then any auth switch or further
/// auth data, until an OK (logged in) or an ERR (refused; the server closes the connection).
#[derive(Default)]
pub(super) struct ServerHalf {
    packets: Packets,
    greeted: bool,
    done: bool,
}

impl ServerHalf {
    /// Whether the login has ended once `bytes` are read.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> bool {
        let Self {
            packets,
            greeted,
            done,
        } = self;
        packets.feed(bytes, |_, payload| {
            if *done {
                return;
            }
            if !std::mem::replace(greeted, true) {
                return;
            }
            // 0xfe is an auth switch, 0x01 more auth data: the exchange goes on.
            if matches!(payload.first(), Some(0x00 | 0xff)) {
                *done = true;
            }
        });
        *done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet as it goes on the wire.
    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut bytes = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
        bytes.extend_from_slice(payload);
        bytes
    }

    fn command(kind: u8, body: &[u8]) -> Vec<u8> {
        packet(0, &[&[kind], body].concat())
    }

    fn counted(bytes: &[u8], logged_in: bool) -> WireCounts {
        let mut counts = WireCounts::default();
        assert_eq!(
            ClientHalf::default().feed(bytes, logged_in, &mut counts),
            Stream::Plain
        );
        counts
    }

    #[test]
    fn each_command_is_counted_by_its_kind() {
        let bytes = [
            command(COM_QUERY, b"BEGIN"),
            command(COM_STMT_PREPARE, b"SELECT ?"),
            command(COM_STMT_EXECUTE, &[1, 0, 0, 0, 0, 1, 0, 0, 0]),
            command(COM_PING, b""),
            command(0x19, &[1, 0, 0, 0]),
            command(COM_QUERY, b"COMMIT"),
            command(0x01, b""),
        ]
        .concat();
        let counts = counted(&bytes, true);
        assert_eq!(
            counts,
            WireCounts {
                commands: 7,
                queries: 2,
                prepares: 1,
                executes: 1,
                pings: 1,
                others: 2,
                query_texts: vec!["BEGIN".into(), "COMMIT".into()],
                ..WireCounts::default()
            }
        );
    }

    #[test]
    fn a_command_split_across_reads_is_counted_once_when_whole() {
        let bytes = [command(COM_QUERY, b"SELECT 1"), command(COM_PING, b"")].concat();
        let mut client = ClientHalf::default();
        let mut counts = WireCounts::default();
        for byte in &bytes {
            client.feed(std::slice::from_ref(byte), true, &mut counts);
        }
        assert_eq!((counts.commands, counts.queries, counts.pings), (2, 1, 1));
        assert_eq!(counts.query_texts, ["SELECT 1"]);
    }

    #[test]
    fn packets_before_the_login_ends_are_not_commands() {
        // A handshake response, then the answer to an auth switch: sequence ids 1 and 3.
        let mut response = vec![0x0d, 0xa2, 0x0a, 0x00];
        response.extend_from_slice(&[0; 28]);
        response.extend_from_slice(b"root\0\0flash_sale\0mysql_native_password\0");
        let bytes = [packet(1, &response), packet(3, &[0; 20])].concat();
        assert_eq!(counted(&bytes, false), WireCounts::default());
        // Even one whose sequence id wrapped to 0 (a client of another protocol).
        assert_eq!(
            counted(&command(COM_QUERY, b"SET x"), false),
            WireCounts::default()
        );
    }

    #[test]
    fn packets_that_answer_a_command_are_not_commands() {
        // COM_QUERY "LOAD DATA LOCAL INFILE …", then the file's contents and its empty end.
        let bytes = [
            command(COM_QUERY, b"LOAD DATA LOCAL INFILE 'x' INTO TABLE t"),
            packet(2, b"1,2\n"),
            packet(3, b""),
        ]
        .concat();
        let counts = counted(&bytes, true);
        assert_eq!((counts.commands, counts.queries), (1, 1));
    }

    #[test]
    fn a_query_of_16_mib_and_more_is_one_command_with_all_its_text() {
        let text = vec![b'x'; MAX_PAYLOAD + 10];
        let payload = [&[COM_QUERY][..], &text].concat();
        let (head, tail) = payload.split_at(MAX_PAYLOAD);
        // The continuation's sequence id could be anything, 0 included once ids wrap.
        let bytes = [packet(0, head), packet(0, tail), command(COM_PING, b"")].concat();
        let counts = counted(&bytes, true);
        assert_eq!((counts.commands, counts.queries, counts.pings), (2, 1, 1));
        assert_eq!(counts.query_texts.len(), 1);
        assert_eq!(counts.query_texts[0].len(), text.len());
    }

    #[test]
    fn a_client_asking_for_tls_is_seen() {
        let mut ssl_request = vec![0x0d, 0xaa, 0x0a, 0x00];
        ssl_request.extend_from_slice(&[0; 28]);
        let mut counts = WireCounts::default();
        let stream = ClientHalf::default().feed(&packet(1, &ssl_request), false, &mut counts);
        assert_eq!(stream, Stream::Encrypted);
        // Without the flag, 32 bytes are not an SSLRequest.
        ssl_request[1] = 0xa2;
        let stream = ClientHalf::default().feed(&packet(1, &ssl_request), false, &mut counts);
        assert_eq!(stream, Stream::Plain);
    }

    /// The server's greeting: protocol 10, a version, a connection id and the rest.
    fn greeting() -> Vec<u8> {
        packet(
            0,
            &[&[0x0a][..], b"10.11.6-MariaDB\0", &[1, 0, 0, 0], &[0; 40]].concat(),
        )
    }

    #[test]
    fn the_login_ends_at_the_first_ok_after_the_greeting() {
        let mut server = ServerHalf::default();
        assert!(!server.feed(&greeting()));
        assert!(server.feed(&packet(2, &[0x00, 0, 0, 2, 0, 0, 0])));
    }

    #[test]
    fn the_login_goes_on_through_an_auth_switch_and_more_data() {
        let mut server = ServerHalf::default();
        let switch = packet(
            2,
            &[&[0xfe][..], b"mysql_native_password\0", &[7; 20]].concat(),
        );
        let fast_auth = packet(4, &[0x01, 0x03]);
        let ok = packet(5, &[0x00, 0, 0, 2, 0, 0, 0]);
        let greeting = greeting();
        // One byte at a time: the greeting's bytes must not be read as an OK.
        for byte in [&greeting[..], &switch, &fast_auth].concat() {
            assert!(!server.feed(&[byte]));
        }
        assert!(server.feed(&ok));
    }

    #[test]
    fn a_refused_login_ends_it_too() {
        let mut server = ServerHalf::default();
        let refused = packet(
            2,
            &[&[0xff, 0x15, 0x04][..], b"#28000Access denied"].concat(),
        );
        assert!(server.feed(&[greeting(), refused].concat()));
    }
}
