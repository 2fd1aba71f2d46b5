//! Every gRPC client works on the socket: the `:authority` a client sends is made one h2 accepts.
//!
//! grpc-core (Python's grpcio, and so Ruby, PHP, C++), grpc-java and grpc-swift send the socket's
//! path, percent-encoded (`%2Frun%2Fopenclaw-supervisor%2Fsupervisor.sock`), as the `:authority`
//! of a `unix:` target. h2, the HTTP/2 server under tonic, parses `:authority` as a URI authority,
//! finds a `%` outside the userinfo (or a `/`) and resets the stream with PROTOCOL_ERROR before
//! tonic sees the call; h2 has no option to relax that (hyperium/h2#487 proposes one, unmerged),
//! and the only fix on the client's side is an option a default channel lacks
//! (`grpc.default_authority`). grpc-go and grpc-dart send `localhost` for a socket.
//!
//! [`Normalized`] wraps each accepted Unix stream and reads the client's HTTP/2 frames the way h2
//! will: header blocks (a HEADERS frame and its CONTINUATIONs) are decoded with an HPACK decoder
//! that follows the client's dynamic table. A block whose `:authority` parses is passed on byte
//! for byte, and the first such block settles the connection: a client keeps one authority per
//! connection, so the rest of it passes unread. For a client that sends a valid authority (tonic,
//! grpc-go, grpcurl) the connection h2 sees is exactly the one the client wrote, and the layer's
//! cost is one HPACK decode per connection. The first block with an authority h2 would refuse switches the
//! connection to re-encoding: from then on every block is written again, its bad `:authority`
//! replaced by `localhost`, as literals without indexing after a dynamic table size update to 0 (so
//! h2's table stays empty and never disagrees with what is sent). The replies (the write side) are
//! not touched. What is not HTTP/2, or an HPACK block that does not decode while nothing was
//! re-encoded yet, is handed on unchanged for h2 to judge.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame written: HTTP/2's initial SETTINGS_MAX_FRAME_SIZE, which tonic keeps.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is not inspected (h2 then judges it as sent).
const MAX_BLOCK: usize = 1 << 20;
/// The dynamic table size the client's encoder may use: h2 advertises the default 4096; a larger
/// update is let through here for h2 to refuse.
const MAX_TABLE: usize = 65_536;
/// What replaces an authority h2 would refuse: what grpc-go and grpc-dart send for a socket.
const LOCALHOST: &[u8] = b"localhost";

/// A stream whose reads give the client's bytes with every `:authority` made one h2 accepts.
pub struct Normalized<S> {
    inner: S,
    conn: Conn,
    /// Bytes read from `inner` that do not yet make a whole unit (a frame head, a header frame).
    input: Vec<u8>,
    /// Bytes ready for the reader, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
    eof: bool,
}

impl<S> Normalized<S> {
    pub fn new(inner: S) -> Self {
        Normalized {
            inner,
            conn: Conn::new(),
            input: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Normalized<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_at < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_at);
                buf.put_slice(&this.out[this.out_at..this.out_at + n]);
                this.out_at += n;
                if this.out_at == this.out.len() {
                    this.out.clear();
                    this.out_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The client hung up: what is left of a unit goes on as it came.
                this.eof = true;
                if let Some(p) = this.conn.pending.take() {
                    this.out.extend_from_slice(&p.raw);
                }
                this.out.append(&mut this.input);
                continue;
            }
            this.input.extend_from_slice(read.filled());
            this.conn.feed(&mut this.input, &mut this.out)?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Normalized<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Normalized<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Where the reading of the client's bytes is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// Inside the connection preface, this many bytes of it seen.
    Preface(usize),
    /// At a frame head.
    Frames,
    /// Inside the payload of a frame passed on as it is, this many bytes left.
    Passing(usize),
    /// Not HTTP/2 as expected, a block that did not decode, or a connection whose first request
    /// had a valid `:authority`: everything goes on unchanged.
    Blind,
}

/// What a header block's HEADERS frame says besides the block.
struct Head {
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
}

/// A header block being gathered: the HEADERS frame and its CONTINUATIONs so far.
struct Pending {
    head: Head,
    block: Vec<u8>,
    /// The frames as they came, to pass on when nothing needs changing.
    raw: Vec<u8>,
}

/// The state of one connection's client-to-server direction.
struct Conn {
    stage: Stage,
    decoder: loona_hpack::Decoder<'static>,
    pending: Option<Pending>,
    /// Whether header blocks are re-encoded (since the first bad authority).
    reencoding: bool,
    /// The fields of the block being read: name and value bytes, one after the other, and
    /// (start, name length, value length) of each.
    scratch: Vec<u8>,
    fields: Vec<(usize, usize, usize)>,
}

impl Conn {
    fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(MAX_TABLE);
        Conn {
            stage: Stage::Preface(0),
            decoder,
            pending: None,
            reencoding: false,
            scratch: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Takes every whole unit from the front of `input` and appends what h2 is to read to `out`;
    /// a partial unit stays in `input`.
    fn feed(&mut self, input: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
        let mut at = 0;
        while at < input.len() {
            let avail = &input[at..];
            match self.stage {
                Stage::Blind => {
                    out.extend_from_slice(avail);
                    at = input.len();
                }
                Stage::Preface(seen) => {
                    let n = avail.len().min(PREFACE.len() - seen);
                    if avail[..n] != PREFACE[seen..seen + n] {
                        self.stage = Stage::Blind;
                        continue;
                    }
                    out.extend_from_slice(&avail[..n]);
                    at += n;
                    self.stage = if seen + n == PREFACE.len() {
                        Stage::Frames
                    } else {
                        Stage::Preface(seen + n)
                    };
                }
                Stage::Passing(left) => {
                    let n = avail.len().min(left);
                    out.extend_from_slice(&avail[..n]);
                    at += n;
                    self.stage = if n == left {
                        Stage::Frames
                    } else {
                        Stage::Passing(left - n)
                    };
                }
                Stage::Frames => {
                    if avail.len() < 9 {
                        break;
                    }
                    let len = usize::from(avail[0]) << 16
                        | usize::from(avail[1]) << 8
                        | usize::from(avail[2]);
                    let kind = avail[3];
                    let gathered = self.pending.as_ref().map_or(0, |p| p.raw.len());
                    let header_frame =
                        kind == HEADERS || (kind == CONTINUATION && self.pending.is_some());
                    if header_frame && gathered + 9 + len <= MAX_BLOCK {
                        if avail.len() < 9 + len {
                            break;
                        }
                        let frame = &avail[..9 + len];
                        at += 9 + len;
                        self.header_frame(frame, out)?;
                    } else {
                        if self.pending.is_some() {
                            self.abandon(out)?;
                        }
                        if header_frame {
                            // Too large to gather: its block cannot be followed, nor anything
                            // after it.
                            if self.reencoding {
                                return Err(invalid(format!(
                                    "a header block of over {MAX_BLOCK} bytes"
                                )));
                            }
                            self.stage = Stage::Blind;
                        }
                        out.extend_from_slice(&avail[..9]);
                        at += 9;
                        if self.stage == Stage::Frames && len > 0 {
                            self.stage = Stage::Passing(len);
                        }
                    }
                }
            }
        }
        input.drain(..at);
        Ok(())
    }

    /// A whole HEADERS or CONTINUATION frame (head and payload).
    fn header_frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = [frame[5], frame[6], frame[7], frame[8]];
        let payload = &frame[9..];
        if kind == HEADERS {
            if self.pending.is_some() {
                // A HEADERS frame inside a block: a protocol error h2 will name.
                self.abandon(out)?;
                out.extend_from_slice(frame);
                return Ok(());
            }
            let Some((priority, fragment)) = headers_fragment(flags, payload) else {
                return self.unchanged(frame, out);
            };
            let head = Head {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
            };
            if flags & END_HEADERS != 0 {
                // The usual request: one frame, read where it lies.
                return self.finish(&head, fragment, frame, out);
            }
            self.pending = Some(Pending {
                head,
                block: fragment.to_vec(),
                raw: frame.to_vec(),
            });
            return Ok(());
        }
        let Some(p) = self.pending.as_mut().filter(|p| p.head.stream == stream) else {
            // A CONTINUATION of another stream: a protocol error h2 will name.
            self.abandon(out)?;
            out.extend_from_slice(frame);
            return Ok(());
        };
        p.block.extend_from_slice(payload);
        p.raw.extend_from_slice(frame);
        if flags & END_HEADERS != 0 {
            if let Some(p) = self.pending.take() {
                self.finish(&p.head, &p.block, &p.raw, out)?;
            }
        }
        Ok(())
    }

    /// A whole header block (`raw`: its frames as they came): passed on as it came, or written
    /// again with a good authority.
    fn finish(
        &mut self,
        head: &Head,
        block: &[u8],
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        if !self.reencoding && scan_authority(block) == Some(true) {
            // A valid authority, found without decoding the rest of the block (tonic Huffman-codes
            // `:path`, and decoding it costs more than the whole call): the connection is settled
            // and passes unread from here; the HPACK decoder is never needed for it.
            out.extend_from_slice(raw);
            self.stage = Stage::Blind;
            return Ok(());
        }
        // The fields go into one reused buffer: a block passed on costs no allocation per field.
        let Conn {
            decoder,
            scratch,
            fields,
            ..
        } = self;
        scratch.clear();
        fields.clear();
        let mut bad = None;
        let mut authority = false;
        let decoded = decoder.decode_with_cb(block, |name, value| {
            let at = scratch.len();
            scratch.extend_from_slice(&name);
            scratch.extend_from_slice(&value);
            fields.push((at, name.len(), value.len()));
            authority |= &*name == b":authority";
            if &*name == b":authority"
                && bad.is_none()
                && http::uri::Authority::try_from(&*value).is_err()
            {
                bad = Some(String::from_utf8_lossy(&value).into_owned());
            }
        });
        if let Err(e) = decoded {
            if self.reencoding {
                return Err(invalid(format!("a header block does not decode: {e:?}")));
            }
            out.extend_from_slice(raw);
            self.stage = Stage::Blind;
            return Ok(());
        }
        if bad.is_none() && !self.reencoding {
            out.extend_from_slice(raw);
            if authority {
                // A client keeps one authority for its connection (a channel has one target):
                // the first valid one settles it, and the rest of the connection passes unread.
                // Reading every block would cost a tonic client's request about 25 µs of HPACK
                // decoding (its Huffman-coded `:path`), a quarter of a status call's CPU.
                self.stage = Stage::Blind;
            }
            return Ok(());
        }
        let mut again = Vec::with_capacity(block.len() * 2);
        if !self.reencoding {
            tracing::debug!(
                authority = bad.as_deref().unwrap_or_default(),
                "a client sent an :authority h2 refuses; its connection's are read as localhost"
            );
            // A dynamic table size update to 0 empties h2's table: nothing sent from now on refers
            // to what the client had indexed.
            again.push(0x20);
            self.reencoding = true;
        }
        for &(at, n, v) in &self.fields {
            let name = &self.scratch[at..at + n];
            let mut value = &self.scratch[at + n..at + n + v];
            if name == b":authority" && http::uri::Authority::try_from(value).is_err() {
                value = LOCALHOST;
            }
            encode_literal(name, value, &mut again);
        }
        write_block(head, &again, out);
        Ok(())
    }

    /// A block cut short by another frame: passed on as gathered (h2 refuses it), unless blocks
    /// are re-encoded already, where h2's table would no longer follow.
    fn abandon(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if let Some(p) = self.pending.take() {
            if self.reencoding {
                return Err(invalid("a header block ends before END_HEADERS".into()));
            }
            out.extend_from_slice(&p.raw);
            self.stage = Stage::Blind;
        }
        Ok(())
    }

    /// A frame that cannot be read as a header block is passed on, and so is everything after it.
    fn unchanged(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if self.reencoding {
            return Err(invalid("a HEADERS frame with bad padding".into()));
        }
        out.extend_from_slice(frame);
        self.stage = Stage::Blind;
        Ok(())
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The priority fields and the block fragment of a HEADERS payload; `None` if the padding or
/// priority fields do not fit.
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut body = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = usize::from(*body.first()?);
        body = &body[1..];
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        priority = Some(<[u8; 5]>::try_from(body.get(..5)?).ok()?);
        body = &body[5..];
    }
    let end = body.len().checked_sub(pad)?;
    Some((priority, &body[..end]))
}

/// Writes `block` as a HEADERS frame (with the block's stream, END_STREAM and priority; no
/// padding) and as many CONTINUATIONs as it needs.
fn write_block(p: &Head, block: &[u8], out: &mut Vec<u8>) {
    let lead = if p.priority.is_some() { 5 } else { 0 };
    let first = block.len().min(MAX_FRAME - lead);
    let mut flags = 0;
    if p.end_stream {
        flags |= END_STREAM;
    }
    if p.priority.is_some() {
        flags |= PRIORITY;
    }
    if first == block.len() {
        flags |= END_HEADERS;
    }
    frame_head(lead + first, HEADERS, flags, p.stream, out);
    if let Some(priority) = p.priority {
        out.extend_from_slice(&priority);
    }
    out.extend_from_slice(&block[..first]);
    let mut rest = &block[first..];
    while !rest.is_empty() {
        let n = rest.len().min(MAX_FRAME);
        let flags = if n == rest.len() { END_HEADERS } else { 0 };
        frame_head(n, CONTINUATION, flags, p.stream, out);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
}

fn frame_head(len: usize, kind: u8, flags: u8, stream: [u8; 4], out: &mut Vec<u8>) {
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream);
}

/// A literal header field without indexing, with a literal name; no Huffman coding (RFC 7541
/// §6.2.2).
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    encode_string(name, out);
    encode_string(value, out);
}

fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    encode_integer(s.len(), 7, 0x00, out);
    out.extend_from_slice(s);
}

/// An HPACK integer with an N-bit prefix (RFC 7541 §5.1); `high` holds the bits above the prefix.
fn encode_integer(mut value: usize, prefix: u8, high: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Whether the `:authority` of a header block parses (`Some(true)`), does not (`Some(false)`), or
/// cannot be told without the connection's dynamic table (`None`: no authority, a reference to
/// the dynamic table, or a block that does not parse). Reads the field representations (RFC 7541
/// §6) and skips every string but the authority's name and value, so a block is read without
/// decoding its other strings.
fn scan_authority(block: &[u8]) -> Option<bool> {
    const AUTHORITY: &[u8] = b":authority";
    // The static table's entry 1 is `:authority`; entries above 61 are the dynamic table's.
    const STATIC_AUTHORITY: usize = 1;
    const STATIC_LEN: usize = 61;
    let mut at = 0;
    while at < block.len() {
        let first = block[at];
        if first & 0x80 != 0 {
            // An indexed field: the static table's `:authority` has an empty value, and a
            // dynamic entry is not known here.
            let index = integer(block, &mut at, 7)?;
            if index == STATIC_AUTHORITY || index == 0 || index > STATIC_LEN {
                return None;
            }
            continue;
        }
        if first & 0xe0 == 0x20 {
            // A dynamic table size update.
            integer(block, &mut at, 5)?;
            continue;
        }
        let prefix = if first & 0xc0 == 0x40 { 6 } else { 4 };
        let index = integer(block, &mut at, prefix)?;
        let is_authority = match index {
            0 => {
                let (huffman, name) = string(block, &mut at)?;
                decoded(huffman, name)?.as_slice() == AUTHORITY
            }
            i if i > STATIC_LEN => return None,
            i => i == STATIC_AUTHORITY,
        };
        let (huffman, value) = string(block, &mut at)?;
        if is_authority {
            let value = decoded(huffman, value)?;
            return Some(http::uri::Authority::try_from(value.as_slice()).is_ok());
        }
    }
    None
}

/// An HPACK integer with an `prefix`-bit prefix at `*at` (RFC 7541 §5.1), `*at` moved past it.
fn integer(block: &[u8], at: &mut usize, prefix: u8) -> Option<usize> {
    let max = (1usize << prefix) - 1;
    let mut value = usize::from(*block.get(*at)?) & max;
    *at += 1;
    if value < max {
        return Some(value);
    }
    let mut shift = 0u32;
    loop {
        let b = *block.get(*at)?;
        *at += 1;
        value = value.checked_add(usize::from(b & 0x7f).checked_shl(shift)?)?;
        if b & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
}

/// An HPACK string at `*at` (RFC 7541 §5.2): whether it is Huffman-coded, and its bytes.
fn string<'b>(block: &'b [u8], at: &mut usize) -> Option<(bool, &'b [u8])> {
    let huffman = *block.get(*at)? & 0x80 != 0;
    let len = integer(block, at, 7)?;
    let bytes = block.get(*at..at.checked_add(len)?)?;
    *at += len;
    Some((huffman, bytes))
}

/// A string's bytes, Huffman-decoded if they are coded, with one decoder table per thread
/// (loona-hpack builds its table anew for every `HuffmanDecoder`).
fn decoded(huffman: bool, bytes: &[u8]) -> Option<Vec<u8>> {
    if !huffman {
        return Some(bytes.to_vec());
    }
    thread_local! {
        static HUFFMAN: std::cell::RefCell<loona_hpack::huffman::HuffmanDecoder> =
            std::cell::RefCell::new(loona_hpack::huffman::HuffmanDecoder::new());
    }
    HUFFMAN.with(|d| d.try_borrow_mut().ok()?.decode(bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: &[u8] = &[0, 0, 0, 0x4, 0, 0, 0, 0, 0];

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_authority_is_told_without_decoding_the_block() {
        // RFC 7541 C.3.1 and C.4.1: `www.example.com` as a plain literal and Huffman-coded.
        let plain = hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
        let huffman = hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff");
        assert_eq!(scan_authority(&plain), Some(true));
        assert_eq!(scan_authority(&huffman), Some(true));
        // grpc-core's socket path, with an indexed name and with a literal one.
        let mut path = vec![0x41, 15];
        path.extend_from_slice(b"%2Frun%2Fx.sock");
        assert_eq!(scan_authority(&path), Some(false));
        let mut literal = vec![0x00, 10];
        literal.extend_from_slice(b":authority");
        literal.push(11);
        literal.extend_from_slice(b"/run/x.sock");
        assert_eq!(scan_authority(&literal), Some(false));
        // Not known here: a dynamic entry (C.3.2's `be`), the static entry's empty value, no
        // authority at all, a cut block.
        assert_eq!(
            scan_authority(&hex("8286 84be 5808 6e6f 2d63 6163 6865")),
            None
        );
        assert_eq!(scan_authority(&[0x82, 0x81]), None);
        assert_eq!(scan_authority(&[0x82, 0x86, 0x84]), None);
        assert_eq!(scan_authority(&plain[..6]), None);
        assert_eq!(
            scan_authority(&[0x41, 0x7f, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            None
        );
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame_head(payload.len(), kind, flags, stream.to_be_bytes(), &mut out);
        out.extend_from_slice(payload);
        out
    }

    /// What h2 reads: `input` fed in pieces of `step` bytes.
    fn through(input: &[u8], step: usize) -> Vec<u8> {
        let mut conn = Conn::new();
        let (mut pending, mut out) = (Vec::new(), Vec::new());
        for piece in input.chunks(step) {
            pending.extend_from_slice(piece);
            conn.feed(&mut pending, &mut out).unwrap();
        }
        out.append(&mut pending);
        out
    }

    /// The header blocks of `bytes` (after the preface) as a fresh decoder (h2's) reads them.
    fn blocks(bytes: &[u8]) -> Vec<Vec<(String, String)>> {
        assert_eq!(&bytes[..24], PREFACE);
        let mut decoder = loona_hpack::Decoder::new();
        let (mut at, mut block, mut out) = (24, Vec::new(), Vec::new());
        while at < bytes.len() {
            let len = usize::from(bytes[at]) << 16
                | usize::from(bytes[at + 1]) << 8
                | usize::from(bytes[at + 2]);
            let (kind, flags) = (bytes[at + 3], bytes[at + 4]);
            let payload = &bytes[at + 9..at + 9 + len];
            if kind == HEADERS {
                block = headers_fragment(flags, payload).unwrap().1.to_vec();
            } else if kind == CONTINUATION {
                block.extend_from_slice(payload);
            }
            if (kind == HEADERS || kind == CONTINUATION) && flags & END_HEADERS != 0 {
                let fields = decoder.decode(&block).unwrap();
                out.push(
                    fields
                        .into_iter()
                        .map(|(n, v)| {
                            (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                        })
                        .collect(),
                );
            }
            at += 9 + len;
        }
        out
    }

    fn field(block: &[(String, String)], name: &str) -> String {
        block.iter().find(|(n, _)| n == name).unwrap().1.clone()
    }

    /// A request as grpc-core writes it: `:authority` a literal with incremental indexing
    /// (static name 1), so that the next request names it by its dynamic index (64, behind the
    /// `:path` and `te` indexed after it).
    fn grpc_core_request(authority: &[u8], first: bool) -> Vec<u8> {
        let mut b = vec![0x83, 0x86]; // :method POST, :scheme http
        if first {
            b.push(0x41);
            encode_string(authority, &mut b);
        } else {
            b.push(0x80 | 64);
        }
        b.push(0x44); // :path, literal with indexing
        encode_string(
            b"/openclaw.supervisor.v1.SupervisorService/ListInstances",
            &mut b,
        );
        b.push(0x40);
        encode_string(b"te", &mut b);
        encode_string(b"trailers", &mut b);
        b
    }

    #[test]
    fn a_valid_authority_passes_byte_for_byte() {
        let mut input = PREFACE.to_vec();
        input.extend(SETTINGS);
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &grpc_core_request(b"localhost", true),
        ));
        input.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 2, 8, 1]));
        input.extend(frame(HEADERS, END_HEADERS | PADDED, 3, &{
            let mut p = vec![3];
            p.extend(grpc_core_request(b"", false));
            p.extend([0, 0, 0]);
            p
        }));
        for step in [1, 7, 4096] {
            assert_eq!(through(&input, step), input, "step {step}");
        }
    }

    #[test]
    fn a_socket_path_authority_is_read_as_localhost_in_every_request() {
        // grpc-core's percent-encoded path, and grpc-java's path as it is.
        for path in [
            &b"%2Frun%2Fopenclaw-supervisor%2Fsupervisor.sock"[..],
            b"/run/openclaw-supervisor/supervisor.sock",
        ] {
            socket_path_requests(path);
        }
    }

    fn socket_path_requests(path: &[u8]) {
        let mut input = PREFACE.to_vec();
        input.extend(SETTINGS);
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &grpc_core_request(path, true),
        ));
        input.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]));
        // The second request split over a CONTINUATION, with priority fields and padding.
        let second = grpc_core_request(b"", false);
        let mut payload = vec![2, 0, 0, 0, 0, 15];
        payload.extend(&second[..3]);
        payload.extend([0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &payload));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, &second[3..]));
        for step in [1, 5, 4096] {
            let out = through(&input, step);
            let blocks = blocks(&out);
            assert_eq!(blocks.len(), 2, "step {step}");
            for b in &blocks {
                assert_eq!(field(b, ":authority"), "localhost");
                assert_eq!(
                    field(b, ":path"),
                    "/openclaw.supervisor.v1.SupervisorService/ListInstances"
                );
                assert_eq!(field(b, "te"), "trailers");
                assert!(http::uri::Authority::try_from(field(b, ":authority")).is_ok());
            }
            // The DATA frame between them is intact, and the second HEADERS keeps END_STREAM.
            assert!(out
                .windows(14)
                .any(|w| w == frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0])));
        }
    }

    #[test]
    fn a_block_larger_than_a_frame_goes_on_in_continuations() {
        let mut block = vec![0x83, 0x86, 0x84, 0x41];
        encode_string(b"%2Ftmp%2Fs.sock", &mut block);
        block.push(0x40);
        encode_string(b"x-big", &mut block);
        encode_string(&vec![b'a'; 40_000], &mut block);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &block[..16_000]));
        input.extend(frame(CONTINUATION, 0, 1, &block[16_000..32_000]));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[32_000..]));
        let out = through(&input, 3000);
        let blocks = blocks(&out);
        assert_eq!(field(&blocks[0], ":authority"), "localhost");
        assert_eq!(field(&blocks[0], "x-big").len(), 40_000);
    }

    #[test]
    fn what_is_not_http2_passes_unchanged() {
        let input = b"GET / HTTP/1.1\r\nHost: %2Ftmp\r\n\r\n".to_vec();
        assert_eq!(through(&input, 3), input);
    }

    #[test]
    fn a_block_that_does_not_decode_passes_unchanged() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]));
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            3,
            &grpc_core_request(b"%2F", true),
        ));
        assert_eq!(through(&input, 4096), input);
    }

    #[test]
    fn integers_follow_rfc_7541() {
        // RFC 7541 C.1: 10 and 1337 with a 5-bit prefix, 42 with an 8-bit prefix.
        let mut out = Vec::new();
        encode_integer(10, 5, 0, &mut out);
        encode_integer(1337, 5, 0, &mut out);
        encode_integer(42, 8, 0, &mut out);
        assert_eq!(out, [10, 31, 154, 10, 42]);
    }
}
