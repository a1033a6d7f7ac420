//! The WASI side of the sandbox: what a processor built for wasm32-wasip2 gets
//! besides the `eddy:processor` world.
//!
//! Rust's standard library on wasm32-wasip2 imports `wasi:cli/*` (environment,
//! exit, stdin/stdout/stderr, terminal-*) and `wasi:io/*` (error, poll, streams)
//! even for a processor that never prints; `HashMap` also needs
//! `wasi:random/*`. Those are linked, granting nothing: no environment
//! variables, no arguments, an empty stdin, and stdout/stderr captured into the
//! processor's log (bounded). `wasi:filesystem/*` is linked with no preopened
//! directory, so every file operation fails with an error instead of trapping.
//!
//! Everything else in `wasi:*` (clocks, sockets, HTTP, ...) is *denied*: the
//! module loads, but calling such a function traps ("`wasi:clocks/wall-clock@0.2.6#now`
//! is denied by the processor sandbox"), which ends that call with
//! [`ProcessError::Trap`](crate::ProcessError::Trap). Clocks are denied rather
//! than faked because a sleep would block the worker thread where the epoch
//! deadline cannot interrupt it. An import outside `wasi:*` and
//! `eddy:processor/*` refuses the module at load time.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, Resource, ResourceTable, ResourceType};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli, WasiCliView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::sync::io::{poll as sync_poll, streams as sync_streams};
use wasmtime_wasi::p2::bindings::{cli, filesystem, random, sync};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, DynPollable, OutputStream, Pollable, StreamError, StreamResult,
};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_io::bindings::wasi::io::{poll as async_poll, streams as async_streams};

use crate::error::RuntimeError;
use crate::instance::Host;

/// The WIT package the runtime implements; a module must import/export only it
/// and `wasi:*`.
pub(crate) const EDDY_PACKAGE: &str = "eddy:processor/";

/// Adds the granted WASI interfaces to `linker`.
pub(crate) fn add_wasi(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    let l = linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<Host, HasTable>(l, |h| &mut h.table)?;
    sync::io::poll::add_to_linker::<Host, HasNonBlockingIo>(l, |h| NonBlockingIo(&mut h.table))?;
    sync::io::streams::add_to_linker::<Host, HasNonBlockingIo>(l, |h| NonBlockingIo(&mut h.table))?;
    cli::exit::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::environment::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::stdin::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::stdout::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::stderr::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_input::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_output::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_stdin::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_stdout::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    cli::terminal_stderr::add_to_linker::<Host, WasiCli>(l, Host::cli)?;
    random::random::add_to_linker::<Host, WasiRandom>(l, |h: &mut Host| h.wasi.random())?;
    random::insecure::add_to_linker::<Host, WasiRandom>(l, |h: &mut Host| h.wasi.random())?;
    random::insecure_seed::add_to_linker::<Host, WasiRandom>(l, |h: &mut Host| h.wasi.random())?;
    filesystem::preopens::add_to_linker::<Host, WasiFilesystem>(l, Host::filesystem)?;
    sync::filesystem::types::add_to_linker::<Host, WasiFilesystem>(l, Host::filesystem)?;
    Ok(())
}

struct HasTable;

impl wasmtime::component::HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// `wasi:io/poll` and `wasi:io/streams` that never block the thread.
///
/// wasmtime-wasi's synchronous bindings run their blocking operations (and
/// even dropping a stream) through `block_on` on a Tokio runtime, which panics
/// when the worker calls a processor from inside an async task. Here those
/// operations are polled once instead: every stream a processor can reach
/// (captured stdout/stderr, an empty stdin) is always ready, and one that is not
/// traps the call ("blocking I/O is denied") rather than blocking the worker.
struct NonBlockingIo<'a>(&'a mut ResourceTable);

struct HasNonBlockingIo;

impl wasmtime::component::HasData for HasNonBlockingIo {
    type Data<'a> = NonBlockingIo<'a>;
}

/// The output of `f` if it is ready at once.
fn now<T>(f: impl Future<Output = T>) -> wasmtime::Result<T> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => Ok(value),
        Poll::Pending => wasmtime::bail!("blocking I/O is denied by the processor sandbox"),
    }
}

fn now_stream<T>(f: impl Future<Output = StreamResult<T>>) -> StreamResult<T> {
    now(f).unwrap_or_else(|e| Err(StreamError::Trap(e)))
}

impl sync_streams::Host for NonBlockingIo<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<sync_streams::StreamError> {
        sync_streams::Host::convert_stream_error(self.0, err)
    }
}

impl sync_streams::HostOutputStream for NonBlockingIo<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        now(async_streams::HostOutputStream::drop(self.0, stream))?
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        sync_streams::HostOutputStream::check_write(self.0, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        sync_streams::HostOutputStream::write(self.0, stream, bytes)
    }

    fn blocking_write_and_flush(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        now_stream(async_streams::HostOutputStream::blocking_write_and_flush(self.0, stream, bytes))
    }

    fn blocking_write_zeroes_and_flush(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        now_stream(async_streams::HostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len))
    }

    fn subscribe(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        sync_streams::HostOutputStream::subscribe(self.0, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        sync_streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        sync_streams::HostOutputStream::flush(self.0, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        now_stream(async_streams::HostOutputStream::blocking_flush(self.0, stream))
    }

    fn splice(&mut self, dst: Resource<DynOutputStream>, src: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        sync_streams::HostOutputStream::splice(self.0, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        now_stream(async_streams::HostOutputStream::blocking_splice(self.0, dst, src, len))
    }
}

impl sync_streams::HostInputStream for NonBlockingIo<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        now(async_streams::HostInputStream::drop(self.0, stream))?
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        sync_streams::HostInputStream::read(self.0, stream, len)
    }

    fn blocking_read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        now_stream(async_streams::HostInputStream::blocking_read(self.0, stream, len))
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        sync_streams::HostInputStream::skip(self.0, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        now_stream(async_streams::HostInputStream::blocking_skip(self.0, stream, len))
    }

    fn subscribe(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        sync_streams::HostInputStream::subscribe(self.0, stream)
    }
}

impl sync_poll::Host for NonBlockingIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        now(async_poll::Host::poll(self.0, pollables))?
    }
}

impl sync_poll::HostPollable for NonBlockingIo<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        now(async_poll::HostPollable::ready(self.0, pollable))?
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        now(async_poll::HostPollable::block(self.0, pollable))?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}

/// The WASI interfaces [`add_wasi`] links (any 0.2.x version).
const GRANTED: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/exit",
    "wasi:cli/environment",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// Refuses a component that imports anything but `eddy:processor/*` and
/// `wasi:*`, then links every function of the `wasi:*` interfaces that are not
/// granted to a trap that names it ("denied by the processor sandbox").
pub(crate) fn check_and_deny_imports(
    linker: &mut Linker<Host>,
    component: &Component,
    engine: &wasmtime::Engine,
) -> Result<(), RuntimeError> {
    let internal = |e: wasmtime::Error| RuntimeError::Engine(format!("linking denied WASI imports: {e:#}"));
    for (name, item) in component.component_type().imports(engine) {
        if name.starts_with(EDDY_PACKAGE) {
            continue;
        }
        if !name.starts_with("wasi:") {
            return Err(RuntimeError::InvalidModule(format!(
                "it imports `{name}`, which Eddy does not provide (a processor may import only \
                 eddy:processor/* and WASI)"
            )));
        }
        let interface = name.split('@').next().unwrap_or(name);
        if GRANTED.contains(&interface) {
            continue;
        }
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            return Err(RuntimeError::InvalidModule(format!("it imports `{name}`, which is not a WASI interface")));
        };
        let mut stubs = linker.instance(name).map_err(internal)?;
        for (export, item) in instance.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    let what = format!("{name}#{export}");
                    stubs
                        .func_new(export, move |_, _, _, _| {
                            wasmtime::bail!("`{what}` is denied by the processor sandbox")
                        })
                        .map_err(internal)?;
                }
                ComponentItem::Resource(_) => {
                    stubs.resource(export, ResourceType::host::<()>(), |_, _| Ok(())).map_err(internal)?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// A fresh WASI context granting nothing; stdout and stderr go to `output`.
pub(crate) fn wasi_ctx(stdout: &CapturedOutput, stderr: &CapturedOutput) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A stdout or stderr that keeps what the module writes, up to a byte budget,
/// and silently drops (but counts) the rest: writing never fails, so
/// `println!` cannot panic. The instance moves the text into its log after
/// each call.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    buffer: Vec<u8>,
    capacity: usize,
    dropped: usize,
}

impl CapturedOutput {
    pub(crate) fn new(capacity: usize) -> Self {
        CapturedOutput { inner: Arc::new(Mutex::new(Captured { capacity, ..Captured::default() })) }
    }

    /// What was written since the last call, and how many bytes were dropped.
    pub(crate) fn take(&self) -> (Vec<u8>, usize) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut c.buffer), std::mem::take(&mut c.dropped))
    }

    fn write(&self, bytes: &[u8]) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = c.capacity.saturating_sub(c.buffer.len());
        let kept = room.min(bytes.len());
        c.buffer.extend_from_slice(&bytes[..kept]);
        c.dropped += bytes.len() - kept;
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        CapturedOutput::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        CapturedOutput::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
