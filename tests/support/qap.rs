//! A small Rserve QAP1 / OCAP client for tests (byte layout: docs/qap-notes.md).
//!
//! `RObj` encodes and decodes the SEXP types OCAP traffic uses; `OcapClient` speaks
//! OCAP over a WebSocket (tokio-tungstenite): it reads the `RsOC` greeting, finds the
//! capabilities by name and calls them (`CMD_OCcall` with an `XT_LANG_NOTAG` of the
//! OCref and the arguments). Shared by the data-plane tests and end-to-end tests.
#![allow(dead_code)]

use std::fmt;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const CMD_OC_INIT: u32 = 0x434F_7352; // "RsOC" on the wire
pub const CMD_OC_CALL: u32 = 0x0F;
pub const CMD_RESP: u32 = 0x1_0000;
pub const RESP_OK: u32 = CMD_RESP | 0x1;
pub const RESP_ERR: u32 = CMD_RESP | 0x2;
pub const CMD_OOB: u32 = 0x2_0000;
pub const OOB_MSG: u32 = 0x2_2000;

pub const DT_SEXP: u8 = 0x0A;
pub const DT_LARGE: u8 = 0x40;

pub const XT_NULL: u8 = 0x00;
pub const XT_STR: u8 = 0x03;
pub const XT_SYM: u8 = 0x05;
pub const XT_VECTOR: u8 = 0x10;
pub const XT_LIST_NOTAG: u8 = 0x14;
pub const XT_SYMNAME: u8 = 0x13;
pub const XT_LIST_TAG: u8 = 0x15;
pub const XT_LANG_NOTAG: u8 = 0x16;
pub const XT_LANG_TAG: u8 = 0x17;
pub const XT_VECTOR_EXP: u8 = 0x1A;
pub const XT_ARRAY_INT: u8 = 0x20;
pub const XT_ARRAY_DOUBLE: u8 = 0x21;
pub const XT_ARRAY_STR: u8 = 0x22;
pub const XT_ARRAY_BOOL: u8 = 0x24;
pub const XT_RAW: u8 = 0x25;
pub const XT_LARGE: u8 = 0x40;
pub const XT_HAS_ATTR: u8 = 0x80;

pub const NA_INT: i32 = i32::MIN;

#[derive(Debug)]
pub struct QapError(pub String);

impl fmt::Display for QapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QapError {}

fn err<T>(msg: impl Into<String>) -> Result<T, QapError> {
    Err(QapError(msg.into()))
}

/// An R value as QAP carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum RValue {
    Null,
    Int(Vec<i32>),
    Double(Vec<f64>),
    /// `None` is NA.
    Str(Vec<Option<String>>),
    Bool(Vec<Option<bool>>),
    Raw(Vec<u8>),
    /// A generic vector (R list).
    List(Vec<RObj>),
    /// A call with untagged elements: head, then arguments.
    Lang(Vec<RObj>),
    /// Tagged pairs (value, tag name); used for attributes and `XT_LANG_TAG`.
    Tagged(Vec<(RObj, Option<String>)>),
    Sym(String),
    /// Anything else: the type byte and the raw body.
    Other(u8, Vec<u8>),
}

/// An R value with its attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct RObj {
    pub value: RValue,
    pub attrs: Vec<(String, RObj)>,
}

impl RObj {
    pub fn new(value: RValue) -> Self {
        RObj {
            value,
            attrs: Vec::new(),
        }
    }

    pub fn with_attr(mut self, name: &str, value: RObj) -> Self {
        self.attrs.push((name.to_string(), value));
        self
    }

    pub fn double(x: f64) -> Self {
        Self::new(RValue::Double(vec![x]))
    }

    pub fn int(x: i32) -> Self {
        Self::new(RValue::Int(vec![x]))
    }

    pub fn string(s: &str) -> Self {
        Self::new(RValue::Str(vec![Some(s.to_string())]))
    }

    pub fn attr(&self, name: &str) -> Option<&RObj> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn strings(&self) -> Option<Vec<Option<String>>> {
        match &self.value {
            RValue::Str(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// `names(x)` of a named list.
    pub fn names(&self) -> Vec<String> {
        self.attr("names")
            .and_then(|n| n.strings())
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.unwrap_or_default())
            .collect()
    }

    /// Is `class(x)` containing `class`?
    pub fn inherits(&self, class: &str) -> bool {
        self.attr("class")
            .and_then(|c| c.strings())
            .is_some_and(|v| v.iter().any(|c| c.as_deref() == Some(class)))
    }

    /// An element of a named list.
    pub fn get(&self, name: &str) -> Option<&RObj> {
        let RValue::List(items) = &self.value else {
            return None;
        };
        let i = self.names().iter().position(|n| n == name)?;
        items.get(i)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut xt = self.encode_body(&mut body);
        if !self.attrs.is_empty() {
            let pairs = RObj::new(RValue::Tagged(
                self.attrs
                    .iter()
                    .map(|(n, v)| (v.clone(), Some(n.clone())))
                    .collect(),
            ));
            let mut with_attrs = pairs.encode();
            with_attrs.extend_from_slice(&body);
            body = with_attrs;
            xt |= XT_HAS_ATTR;
        }
        item(xt, &body)
    }

    fn encode_body(&self, out: &mut Vec<u8>) -> u8 {
        match &self.value {
            RValue::Null => XT_NULL,
            RValue::Int(v) => {
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                XT_ARRAY_INT
            }
            RValue::Double(v) => {
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                XT_ARRAY_DOUBLE
            }
            RValue::Str(v) => {
                for s in v {
                    match s {
                        Some(s) => out.extend_from_slice(s.as_bytes()),
                        None => out.push(0xFF),
                    }
                    out.push(0);
                }
                pad(out, 0x01);
                XT_ARRAY_STR
            }
            RValue::Bool(v) => {
                out.extend_from_slice(&(v.len() as i32).to_le_bytes());
                out.extend(v.iter().map(|b| match b {
                    Some(false) => 0u8,
                    Some(true) => 1,
                    None => 2,
                }));
                pad(out, 0xFF);
                XT_ARRAY_BOOL
            }
            RValue::Raw(v) => {
                out.extend_from_slice(&(v.len() as i32).to_le_bytes());
                out.extend_from_slice(v);
                pad(out, 0);
                XT_RAW
            }
            RValue::List(v) | RValue::Lang(v) => {
                for x in v {
                    out.extend_from_slice(&x.encode());
                }
                if matches!(self.value, RValue::List(_)) {
                    XT_VECTOR
                } else {
                    XT_LANG_NOTAG
                }
            }
            RValue::Tagged(pairs) => {
                for (value, tag) in pairs {
                    out.extend_from_slice(&value.encode());
                    match tag {
                        Some(t) => out.extend_from_slice(&symname(t)),
                        None => out.extend_from_slice(&item(XT_NULL, &[])),
                    }
                }
                XT_LIST_TAG
            }
            RValue::Sym(s) => {
                out.extend_from_slice(&symname(s)[4..]);
                XT_SYMNAME
            }
            RValue::Other(xt, body) => {
                out.extend_from_slice(body);
                *xt
            }
        }
    }

    /// Decode one SEXP at the start of `buf`; returns it and the bytes used.
    pub fn decode(buf: &[u8]) -> Result<(RObj, usize), QapError> {
        let (typ, len, hdr) = header(buf)?;
        let end = hdr + len;
        if buf.len() < end {
            return err(format!(
                "SEXP of {len} bytes, only {} left",
                buf.len() - hdr
            ));
        }
        let mut pos = hdr;
        let mut attrs = Vec::new();
        if typ & XT_HAS_ATTR != 0 {
            let (a, used) = RObj::decode(&buf[pos..end])?;
            pos += used;
            if let RValue::Tagged(pairs) = a.value {
                attrs = pairs
                    .into_iter()
                    .map(|(v, t)| (t.unwrap_or_default(), v))
                    .collect();
            }
        }
        let xt = typ & 0x3F;
        let body = &buf[pos..end];
        let value = match xt {
            XT_NULL => RValue::Null,
            XT_ARRAY_INT => RValue::Int(
                body.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            XT_ARRAY_DOUBLE => RValue::Double(
                body.chunks_exact(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        f64::from_le_bytes(b)
                    })
                    .collect(),
            ),
            XT_ARRAY_STR => {
                let trimmed = match body.iter().rposition(|&b| b == 0) {
                    Some(last) => &body[..last],
                    None => &[][..],
                };
                if body.is_empty() {
                    RValue::Str(Vec::new())
                } else {
                    RValue::Str(
                        trimmed
                            .split(|&b| b == 0)
                            .map(|s| (s != [0xFF]).then(|| String::from_utf8_lossy(s).into_owned()))
                            .collect(),
                    )
                }
            }
            XT_ARRAY_BOOL => {
                let n = le_u32(body, 0)? as usize;
                RValue::Bool(
                    body.get(4..4 + n)
                        .ok_or_else(|| QapError("short logical vector".into()))?
                        .iter()
                        .map(|b| match b {
                            0 => Some(false),
                            1 => Some(true),
                            _ => None,
                        })
                        .collect(),
                )
            }
            XT_RAW => {
                let n = le_u32(body, 0)? as usize;
                RValue::Raw(
                    body.get(4..4 + n)
                        .ok_or_else(|| QapError("short raw vector".into()))?
                        .to_vec(),
                )
            }
            XT_SYMNAME | XT_STR | XT_SYM => {
                let s = body.split(|&b| b == 0).next().unwrap_or_default();
                RValue::Sym(String::from_utf8_lossy(s).into_owned())
            }
            XT_VECTOR | XT_VECTOR_EXP | XT_LIST_NOTAG | XT_LANG_NOTAG => {
                let mut items = Vec::new();
                let mut p = 0;
                while p < body.len() {
                    let (o, used) = RObj::decode(&body[p..])?;
                    items.push(o);
                    p += used;
                }
                if xt == XT_LANG_NOTAG {
                    RValue::Lang(items)
                } else {
                    RValue::List(items)
                }
            }
            XT_LIST_TAG | XT_LANG_TAG => {
                let mut pairs = Vec::new();
                let mut p = 0;
                while p < body.len() {
                    let (v, used) = RObj::decode(&body[p..])?;
                    p += used;
                    let (t, used) = RObj::decode(&body[p..])?;
                    p += used;
                    let tag = match t.value {
                        RValue::Sym(s) => Some(s),
                        _ => None,
                    };
                    pairs.push((v, tag));
                }
                RValue::Tagged(pairs)
            }
            other => RValue::Other(other, body.to_vec()),
        };
        Ok((RObj { value, attrs }, end))
    }
}

fn pad(out: &mut Vec<u8>, with: u8) {
    while !out.len().is_multiple_of(4) {
        out.push(with);
    }
}

fn symname(name: &str) -> Vec<u8> {
    let mut body = name.as_bytes().to_vec();
    body.push(0);
    pad(&mut body, 0);
    item(XT_SYMNAME, &body)
}

/// An item (SEXP or parameter) header + body; large when the body needs > 24 bits.
fn item(typ: u8, body: &[u8]) -> Vec<u8> {
    let len = body.len();
    let mut out = Vec::with_capacity(len + 8);
    if len >= 1 << 24 {
        let w = u32::from(typ | XT_LARGE) | (((len & 0xFF_FFFF) as u32) << 8);
        out.extend_from_slice(&w.to_le_bytes());
        out.extend_from_slice(&((len >> 24) as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(u32::from(typ) | ((len as u32) << 8)).to_le_bytes());
    }
    out.extend_from_slice(body);
    out
}

fn le_u32(buf: &[u8], at: usize) -> Result<u32, QapError> {
    match buf.get(at..at + 4) {
        Some(b) => Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        None => err("truncated"),
    }
}

/// (type byte, body length, header length)
fn header(buf: &[u8]) -> Result<(u8, usize, usize), QapError> {
    let w = le_u32(buf, 0)?;
    let typ = (w & 0xFF) as u8;
    let mut len = (w >> 8) as usize;
    if typ & XT_LARGE != 0 {
        len |= (le_u32(buf, 4)? as usize) << 24;
        return Ok((typ, len, 8));
    }
    Ok((typ, len, 4))
}

/// A QAP1 message.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub cmd: u32,
    pub msg_id: u32,
    /// DT_SEXP parameters decoded; others kept raw.
    pub params: Vec<Param>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Sexp(RObj),
    Raw(u8, Vec<u8>),
}

impl Msg {
    pub fn encode(cmd: u32, msg_id: u32, sexps: &[RObj]) -> Vec<u8> {
        let mut payload = Vec::new();
        for s in sexps {
            payload.extend_from_slice(&item(DT_SEXP, &s.encode()));
        }
        let len = payload.len() as u64;
        let mut out = Vec::with_capacity(16 + payload.len());
        out.extend_from_slice(&cmd.to_le_bytes());
        out.extend_from_slice(&((len & 0xFFFF_FFFF) as u32).to_le_bytes());
        out.extend_from_slice(&msg_id.to_le_bytes());
        out.extend_from_slice(&((len >> 32) as u32).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    pub fn decode(data: &[u8]) -> Result<Msg, QapError> {
        let cmd = le_u32(data, 0)?;
        let len = u64::from(le_u32(data, 4)?) | (u64::from(le_u32(data, 12)?) << 32);
        let msg_id = le_u32(data, 8)?;
        if len != (data.len() - 16) as u64 {
            return err(format!(
                "QAP length {len} but {} payload bytes",
                data.len() - 16
            ));
        }
        let mut params = Vec::new();
        let mut pos = 16;
        while pos < data.len() {
            let (typ, plen, hdr) = header(&data[pos..])?;
            let start = pos + hdr;
            let end = start + plen;
            if end > data.len() {
                return err("parameter runs past the message");
            }
            if typ & 0x3F == DT_SEXP {
                params.push(Param::Sexp(RObj::decode(&data[start..end])?.0));
            } else {
                params.push(Param::Raw(typ, data[start..end].to_vec()));
            }
            pos = end;
        }
        Ok(Msg {
            cmd,
            msg_id,
            params,
        })
    }

    pub fn sexp(&self) -> Option<&RObj> {
        self.params.iter().find_map(|p| match p {
            Param::Sexp(s) => Some(s),
            Param::Raw(..) => None,
        })
    }
}

/// The bytes of `CMD_OCcall`: `capability(args…)`.
pub fn occall(capability: &RObj, args: &[RObj], msg_id: u32) -> Vec<u8> {
    let mut call = vec![capability.clone()];
    call.extend_from_slice(args);
    Msg::encode(CMD_OC_CALL, msg_id, &[RObj::new(RValue::Lang(call))])
}

/// The answer to one OCcall.
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult {
    Ok(RObj),
    /// `RESP_ERR` with the error code from the high byte (0x7F: R error).
    RError(u8),
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// OCAP over one WebSocket.
pub struct OcapClient<S = MaybeTlsStream<TcpStream>> {
    pub ws: WebSocketStream<S>,
    /// The `oc.init()` result (usually a named list of capabilities).
    pub greeting: RObj,
    /// The greeting's raw bytes.
    pub greeting_raw: Vec<u8>,
    next_id: u32,
}

impl OcapClient {
    pub async fn connect(url: &str) -> Result<Self, QapError> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| QapError(format!("WebSocket connect to {url}: {e}")))?;
        Self::from_ws(ws).await
    }
}

/// Any stream: plain TCP, or TLS set up by the test (wss://).
impl<S: AsyncRead + AsyncWrite + Unpin> OcapClient<S> {
    /// Start OCAP on an open WebSocket: the first message must be the greeting.
    pub async fn from_ws(mut ws: WebSocketStream<S>) -> Result<Self, QapError> {
        let data = next_binary(&mut ws).await?;
        if data.get(..4) != Some(b"RsOC") {
            return err(format!(
                "greeting does not start with RsOC: {:02x?}",
                &data[..data.len().min(16)]
            ));
        }
        let msg = Msg::decode(&data)?;
        if msg.cmd != CMD_OC_INIT {
            return err(format!("greeting cmd {:#x}", msg.cmd));
        }
        let greeting = msg
            .sexp()
            .cloned()
            .ok_or_else(|| QapError("greeting has no SEXP".into()))?;
        Ok(OcapClient {
            ws,
            greeting,
            greeting_raw: data,
            next_id: 1,
        })
    }

    /// The capability (an OCref: character(1) of class "OCref") called `name`.
    pub fn capability(&self, name: &str) -> Option<RObj> {
        self.greeting
            .get(name)
            .filter(|c| c.inherits("OCref"))
            .cloned()
    }

    /// Call `capability(args…)`. OOB sends are skipped; an OOB message is answered
    /// with `NULL`.
    pub async fn call(&mut self, capability: &RObj, args: &[RObj]) -> Result<CallResult, QapError> {
        let id = self.next_id;
        self.next_id += 1;
        self.ws
            .send(Message::binary(occall(capability, args, id)))
            .await
            .map_err(|e| QapError(format!("send: {e}")))?;
        loop {
            let data = next_binary(&mut self.ws).await?;
            let msg = Msg::decode(&data)?;
            if msg.cmd & CMD_OOB != 0 {
                if msg.cmd & 0xF_F000 == OOB_MSG {
                    let reply = Msg::encode(msg.cmd, msg.msg_id, &[RObj::new(RValue::Null)]);
                    self.ws
                        .send(Message::binary(reply))
                        .await
                        .map_err(|e| QapError(format!("send: {e}")))?;
                }
                continue;
            }
            if msg.msg_id != id {
                return err(format!(
                    "answer to message {} while waiting for {id}",
                    msg.msg_id
                ));
            }
            return match msg.cmd & 0x00FF_FFFF {
                RESP_OK => Ok(CallResult::Ok(
                    msg.sexp().cloned().unwrap_or(RObj::new(RValue::Null)),
                )),
                RESP_ERR => Ok(CallResult::RError((msg.cmd >> 24) as u8)),
                other => err(format!("unexpected response {other:#x}")),
            };
        }
    }

    /// Call a capability by name and expect success.
    pub async fn call_ok(&mut self, name: &str, args: &[RObj]) -> Result<RObj, QapError> {
        let cap = self
            .capability(name)
            .ok_or_else(|| QapError(format!("no capability {name}")))?;
        match self.call(&cap, args).await? {
            CallResult::Ok(v) => Ok(v),
            CallResult::RError(code) => err(format!("{name} failed with R error {code:#x}")),
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Some(Ok(_)) = self.ws.next().await {}
    }
}

async fn next_binary<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Result<Vec<u8>, QapError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => return err(format!("unexpected message {other:?}")),
            Some(Err(e)) => return err(format!("WebSocket: {e}")),
            None => return err("WebSocket closed"),
        }
    }
}
