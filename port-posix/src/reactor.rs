//! The event loop's reactor: epoll with edge-triggered registration, a timer list, and
//! [`block_on`], one per thread (each worker runs its own executor on its own thread).
//!
//! Why not async-io, which DESIGN.md names: measured under `femtomq bench fanin -q 1`
//! (BENCHMARKS.md, "Engine hot path"), each turn of its loop made, besides the epoll wait, four
//! system calls that move no data (polling 3.11 sets a timerfd, re-arms the timerfd and its
//! notifier with epoll_ctl, reads the notifier) and re-armed every source that fired (one-shot
//! mode): about eight such calls for every seven `sendto`/`recvfrom`. Its fixed 1,000-slot
//! timer-operation queue and helper thread cost about 100 KB of idle memory (DEPENDENCIES.md),
//! and each source about 200 B. Here a source is registered once; its readiness is a flag that
//! epoll sets and the I/O that finds the socket drained clears; the timeout of the nearest timer
//! goes to `epoll_pwait` itself; nothing else is called per turn.
//!
//! Readiness is edge-triggered, so whoever reads must read until the socket reports
//! `WouldBlock` (or, for a stream socket, returns less than asked: [`Async::read_now`]) before
//! waiting for [`Async::readable`] again; the [`AsyncRead`]/[`AsyncWrite`] implementations do.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::{Future, poll_fn};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroU32;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use rustix::buffer::spare_capacity;
use rustix::event::{EventfdFlags, Timespec, epoll, eventfd};

/// Events taken from the kernel per wait (12-16 bytes each).
const EVENTS_PER_WAIT: usize = 256;
/// The epoll key of the cross-thread notifier.
const NOTIFIER_KEY: u64 = u64::MAX;

thread_local! {
    static CURRENT: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
}

/// One thread's epoll instance, its sources and its timers.
struct Reactor {
    epoll: OwnedFd,
    /// Readiness of each registered source, by key, inline (no allocation per source).
    sources: RefCell<Vec<Readiness>>,
    free_keys: RefCell<Vec<u32>>,
    /// The generation the next registration gets (see [`Readiness::generation`]).
    next_generation: Cell<NonZeroU32>,
    /// Wakers of pending [`Timer`]s by deadline (and an id that makes the key unique).
    timers: RefCell<BTreeMap<(Instant, u64), Waker>>,
    next_timer_id: Cell<u64>,
    events: RefCell<Vec<epoll::Event>>,
    /// Wakers to call once the event list is released.
    to_wake: RefCell<Vec<Waker>>,
    notifier: Arc<Notifier>,
}

/// What wakes [`block_on`]: a flag, and an eventfd written only while the thread sleeps in
/// epoll (a wake from the thread itself, the common case, costs no system call).
struct Notifier {
    woken: AtomicBool,
    sleeping: AtomicBool,
    eventfd: OwnedFd,
}

impl Wake for Notifier {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
        }
    }
}

/// Readiness of one source, set by the reactor and cleared by its I/O: a slot of the
/// reactor's table, found by the source's key (24 B per connection, where an `Rc` of its own
/// cost 8 B of pointer in the table, 8 in the task and a 40 B allocation).
///
/// One task waits on a source (every source here has a single owner: a connection's task, the
/// accept loop, a signal pipe's loop), so one waiter slot serves both directions: any event of
/// the source wakes it, and it looks at both flags. Two slots would cost every connection 16 B
/// more for wake-ups that a task waiting for both directions, as a connection does, never
/// needs apart.
struct Readiness {
    /// Which registration holds the slot (reactor-wide count), so that a [`Wakeup`] kept after
    /// its source was dropped does not wake the next one in the slot; `None`: the slot is free.
    generation: Option<NonZeroU32>,
    readable: Cell<bool>,
    writable: Cell<bool>,
    /// A [`Wakeup`] came (an event of the program, not of the source).
    woken: Cell<bool>,
    /// The task waiting for either direction or for a [`Wakeup`].
    waiter: Cell<Option<Waker>>,
}

impl Readiness {
    /// A slot no source holds.
    fn free() -> Readiness {
        Readiness {
            generation: None,
            readable: Cell::new(false),
            writable: Cell::new(false),
            woken: Cell::new(false),
            waiter: Cell::new(None),
        }
    }

    fn is_free(&self) -> bool {
        self.generation.is_none()
    }

    /// The flag of one direction.
    fn direction(&self, write: bool) -> &Cell<bool> {
        if write {
            &self.writable
        } else {
            &self.readable
        }
    }
}

/// Leaves `waker` in `slot`, keeping the one there if it wakes the same task.
fn wait_in(slot: &Cell<Option<Waker>>, waker: &Waker) {
    let old = slot.take();
    slot.set(Some(match old {
        Some(old) if old.will_wake(waker) => old,
        _ => waker.clone(),
    }));
}

impl Reactor {
    /// This thread's reactor, created on first use.
    fn current() -> io::Result<Rc<Reactor>> {
        CURRENT.with(|current| {
            if let Some(reactor) = current.borrow().as_ref() {
                return Ok(reactor.clone());
            }
            let reactor = Rc::new(Reactor::new()?);
            *current.borrow_mut() = Some(reactor.clone());
            Ok(reactor)
        })
    }

    fn new() -> io::Result<Reactor> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let eventfd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &epoll,
            &eventfd,
            epoll::EventData::new_u64(NOTIFIER_KEY),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        Ok(Reactor {
            epoll,
            sources: RefCell::new(Vec::new()),
            free_keys: RefCell::new(Vec::new()),
            next_generation: Cell::new(NonZeroU32::MIN),
            timers: RefCell::new(BTreeMap::new()),
            next_timer_id: Cell::new(0),
            events: RefCell::new(Vec::with_capacity(EVENTS_PER_WAIT)),
            to_wake: RefCell::new(Vec::new()),
            notifier: Arc::new(Notifier {
                woken: AtomicBool::new(true),
                sleeping: AtomicBool::new(false),
                eventfd,
            }),
        })
    }

    fn register(&self, fd: impl AsFd) -> io::Result<(u32, NonZeroU32)> {
        let mut sources = self.sources.borrow_mut();
        let mut free_keys = self.free_keys.borrow_mut();
        // Free keys are checked when taken: the list may hold keys of slots since trimmed off
        // the end of the table, or taken again.
        let key = loop {
            match free_keys.pop() {
                Some(key) if sources.get(key as usize).is_some_and(Readiness::is_free) => {
                    break key;
                }
                Some(_) => {}
                None => {
                    // Grown by a quarter, not doubled: one entry per connection.
                    if sources.len() == sources.capacity() {
                        let room = (sources.capacity() / 4).max(16);
                        sources.reserve_exact(room);
                    }
                    sources.push(Readiness::free());
                    break (sources.len() - 1) as u32;
                }
            }
        };
        let flags = epoll::EventFlags::IN
            | epoll::EventFlags::OUT
            | epoll::EventFlags::RDHUP
            | epoll::EventFlags::ET;
        if let Err(e) = epoll::add(
            &self.epoll,
            fd,
            epoll::EventData::new_u64(u64::from(key)),
            flags,
        ) {
            free_keys.push(key);
            return Err(e.into());
        }
        let generation = self.next_generation.get();
        self.next_generation
            .set(generation.checked_add(1).unwrap_or(NonZeroU32::MIN));
        // Optimistic: the first read or write finds out, and clears the flag if it must wait.
        sources[key as usize] = Readiness {
            generation: Some(generation),
            readable: Cell::new(true),
            writable: Cell::new(true),
            woken: Cell::new(false),
            waiter: Cell::new(None),
        };
        Ok((key, generation))
    }

    fn release(&self, key: u32) {
        // The waiter, if any, is dropped after the table is released.
        let _waiter = self.free_slot(key);
    }

    /// Frees the slot of `key` and gives back what it held.
    fn free_slot(&self, key: u32) -> Option<Waker> {
        let mut sources = self.sources.borrow_mut();
        let slot = sources.get_mut(key as usize)?;
        let waiter = std::mem::replace(slot, Readiness::free()).waiter.take();
        let mut free_keys = self.free_keys.borrow_mut();
        free_keys.push(key);
        while sources.last().is_some_and(Readiness::is_free) {
            sources.pop();
        }
        // After a wave of disconnects the table gives its memory back (amortized: only when it
        // is down to a quarter of its capacity).
        if sources.capacity() > 64 && sources.len() < sources.capacity() / 4 {
            sources.shrink_to_fit();
            free_keys.retain(|&key| sources.get(key as usize).is_some_and(Readiness::is_free));
            free_keys.shrink_to_fit();
        }
        waiter
    }

    /// Waits for events (not at all when woken already, at most until the nearest timer),
    /// marks the sources ready and wakes their waiters and those of the timers that expired.
    fn turn(&self) -> io::Result<()> {
        let notifier = &self.notifier;
        let mut timeout = if notifier.woken.load(Ordering::SeqCst) {
            Some(Duration::ZERO)
        } else {
            self.timers
                .borrow()
                .first_key_value()
                .map(|(&(deadline, _), _)| deadline.saturating_duration_since(Instant::now()))
        };
        let sleeps = timeout != Some(Duration::ZERO);
        if sleeps {
            notifier.sleeping.store(true, Ordering::SeqCst);
            // A wake from another thread between the check above and here is not lost.
            if notifier.woken.load(Ordering::SeqCst) {
                timeout = Some(Duration::ZERO);
            }
        }
        let timespec = timeout.map(|timeout| Timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as _,
            tv_nsec: timeout.subsec_nanos() as _,
        });
        let mut events = self.events.borrow_mut();
        events.clear();
        let waited = epoll::wait(&self.epoll, spare_capacity(&mut events), timespec.as_ref());
        if sleeps {
            notifier.sleeping.store(false, Ordering::SeqCst);
        }
        match waited {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let mut wakers = std::mem::take(&mut *self.to_wake.borrow_mut());
        {
            let sources = self.sources.borrow();
            for event in events.iter() {
                let key = event.data.u64();
                let flags = event.flags;
                if key == NOTIFIER_KEY {
                    let mut count = [0u8; 8];
                    let _ = rustix::io::read(&notifier.eventfd, &mut count);
                    continue;
                }
                let Some(readiness) = sources.get(key as usize).filter(|r| !r.is_free()) else {
                    continue;
                };
                let failed = flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP);
                if failed
                    || flags.intersects(
                        epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::PRI,
                    )
                {
                    readiness.readable.set(true);
                }
                if failed || flags.contains(epoll::EventFlags::OUT) {
                    readiness.writable.set(true);
                }
                wakers.extend(readiness.waiter.take());
            }
        }
        drop(events);
        {
            let mut timers = self.timers.borrow_mut();
            let now = Instant::now();
            while let Some(entry) = timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                wakers.push(entry.remove());
            }
        }
        // Woken with no borrow held: a waker may run code that registers or drops sources.
        for waker in wakers.drain(..) {
            waker.wake();
        }
        // The (empty) vector's buffer serves the next turn.
        *self.to_wake.borrow_mut() = wakers;
        Ok(())
    }
}

/// Runs `future` to completion on this thread, waiting in epoll whenever it has nothing to do.
pub fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
    let reactor = Reactor::current()?;
    let waker = Waker::from(reactor.notifier.clone());
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    reactor.notifier.woken.store(true, Ordering::SeqCst);
    loop {
        if reactor.notifier.woken.swap(false, Ordering::SeqCst) {
            if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
                return Ok(output);
            }
        }
        reactor.turn()?;
    }
}

/// Wakes the task waiting on a source ([`Async::wakeup`]); a wake-up sent while none waits is
/// kept for the next [`Async::poll_woken`].
/// It names the source's slot and registration; it is used on the source's thread only (not
/// `Send`).
pub struct Wakeup {
    key: u32,
    generation: NonZeroU32,
    _thread_bound: PhantomData<*const ()>,
}

impl Wakeup {
    pub fn wake(&self) {
        let waker = with_slot(self.key, self.generation, |readiness| {
            readiness.woken.set(true);
            readiness.waiter.take()
        })
        .flatten();
        // Whichever way the task waits: for input, or for room to write. Woken with no borrow
        // held (the task may run at once and use the table).
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// An I/O object registered with this thread's reactor (a socket, a pipe), non-blocking.
/// One task at a time waits on it: the reactor keeps one waiter per source.
pub struct Async<T: AsFd> {
    // Dropped first: closing the descriptor takes it out of the epoll set.
    io: T,
    registration: Registration,
}

/// A source's place in its thread's reactor, given back when it is dropped. The reactor is
/// found through the thread (it lives as long as the thread, and a source never leaves its
/// thread: not `Send`), which saves a pointer in every connection.
struct Registration {
    key: u32,
    generation: NonZeroU32,
    _thread_bound: PhantomData<*const ()>,
}

/// Runs `f` on the readiness in slot `key` of this thread's reactor if registration
/// `generation` still holds it (`None` otherwise). `f` must not register or drop sources (the
/// table is borrowed meanwhile); it reads and sets flags and keeps or takes a waker.
fn with_slot<R>(key: u32, generation: NonZeroU32, f: impl FnOnce(&Readiness) -> R) -> Option<R> {
    CURRENT.with(|current| {
        let current = current.borrow();
        let sources = current.as_ref()?.sources.borrow();
        let readiness = sources
            .get(key as usize)
            .filter(|r| r.generation == Some(generation))?;
        Some(f(readiness))
    })
}

impl Registration {
    /// Runs `f` on this source's readiness (see [`with_slot`]).
    fn with<R>(&self, f: impl FnOnce(&Readiness) -> R) -> R {
        with_slot(self.key, self.generation, f)
            .expect("a source is used on the thread that registered it")
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // `try_with`: a source dropped while the thread's locals are torn down has no reactor
        // left to tell.
        let _ = CURRENT.try_with(|current| {
            if let Some(reactor) = current.borrow().as_ref() {
                reactor.release(self.key);
            }
        });
    }
}

impl<T: AsFd> Async<T> {
    /// Makes `io` non-blocking and registers it with this thread's reactor.
    pub fn new(io: T) -> io::Result<Async<T>> {
        rustix::io::ioctl_fionbio(&io, true)?;
        let reactor = Reactor::current()?;
        let (key, generation) = reactor.register(&io)?;
        Ok(Async {
            io,
            registration: Registration {
                key,
                generation,
                _thread_bound: PhantomData,
            },
        })
    }

    /// The I/O object.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Takes the I/O object out of the reactor (still non-blocking), to hand it elsewhere.
    pub fn into_inner(self) -> io::Result<T> {
        let Async { io, registration } = self;
        // The descriptor stays open, so its registration must go explicitly.
        let deleted =
            Reactor::current().and_then(|reactor| Ok(epoll::delete(&reactor.epoll, &io)?));
        drop(registration);
        deleted?;
        Ok(io)
    }

    /// Waits until the source may be read (at once if it has not been found drained since
    /// its last event).
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|context| self.poll_io(context, false, |_| Ok(()))).await
    }

    /// Waits until the source may be written.
    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|context| self.poll_io(context, true, |_| Ok(()))).await
    }

    /// A handle that wakes the task waiting on this source for a reason of the program's own
    /// (output to write, say), seen by [`Async::poll_woken`]. It shares the source's waiters, so
    /// it costs a connection no waker of its own.
    pub fn wakeup(&self) -> Wakeup {
        Wakeup {
            key: self.registration.key,
            generation: self.registration.generation,
            _thread_bound: PhantomData,
        }
    }

    /// Ready (and the wake-up taken) if a [`Wakeup`] came since the last call; otherwise the
    /// task waits for one (or for the source's next event: either wakes it).
    pub fn poll_woken(&self, context: &mut Context<'_>) -> Poll<()> {
        self.registration.with(|readiness| {
            if readiness.woken.replace(false) {
                return Poll::Ready(());
            }
            wait_in(&readiness.waiter, context.waker());
            Poll::Pending
        })
    }

    /// [`Async::readable`] for hand-written futures: ready at once unless the source was found
    /// drained since its last event; otherwise the task is woken by the next one.
    pub fn poll_readable(&self, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_io(context, false, |_| Ok(()))
    }

    /// Runs `attempt` while the source is ready in that direction and `attempt` finds it
    /// drained (`WouldBlock`, which clears the flag); waits for the next event when it is not.
    fn poll_io<R>(
        &self,
        context: &mut Context<'_>,
        write: bool,
        mut attempt: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            let ready = self.registration.with(|readiness| {
                let ready = readiness.direction(write).get();
                if !ready {
                    wait_in(&readiness.waiter, context.waker());
                }
                ready
            });
            if !ready {
                return Poll::Pending;
            }
            match attempt(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self
                    .registration
                    .with(|readiness| readiness.direction(write).set(false)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl<T: AsFd> Async<T>
where
    for<'a> &'a T: Read,
{
    /// One read without waiting, for a stream socket: a `WouldBlock`, or fewer bytes than
    /// asked for (the socket had no more), marks it drained, so that [`Async::readable`] waits
    /// for the next event.
    pub fn read_now(&self, buffer: &mut [u8]) -> io::Result<usize> {
        let result = (&self.io).read(buffer);
        let drained = match &result {
            Ok(count) => *count > 0 && *count < buffer.len(),
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        if drained {
            self.registration
                .with(|readiness| readiness.readable.set(false));
        }
        result
    }
}

impl<T: AsFd> Async<T>
where
    for<'a> &'a T: Write,
{
    /// One write for hand-written futures: the bytes the socket took, or `Pending` (the task
    /// is woken when it may be written again).
    pub fn poll_write_now(
        &self,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(context, true, |mut io| io.write(buffer))
    }
}

impl Async<TcpListener> {
    /// Accepts a connection, registered with this thread's reactor.
    pub async fn accept(&self) -> io::Result<(Async<TcpStream>, SocketAddr)> {
        let (stream, peer) =
            poll_fn(|context| self.poll_io(context, false, |io| io.accept())).await?;
        Ok((Async::new(stream)?, peer))
    }
}

impl Async<TcpStream> {
    /// Connects to `address` without blocking the thread.
    pub async fn connect(address: SocketAddr) -> io::Result<Async<TcpStream>> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        let family = match address {
            SocketAddr::V4(_) => AddressFamily::INET,
            SocketAddr::V6(_) => AddressFamily::INET6,
        };
        let socket = rustix::net::socket_with(
            family,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )?;
        match rustix::net::connect(&socket, &address) {
            Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        let stream = Async::new(TcpStream::from(socket))?;
        // Writable once connected or failed; a fresh registration starts optimistic, so wait
        // for the event itself.
        stream
            .registration
            .with(|readiness| readiness.writable.set(false));
        stream.writable().await?;
        match rustix::net::sockopt::socket_error(&stream.io)? {
            Ok(()) => Ok(stream),
            Err(e) => Err(e.into()),
        }
    }
}

impl<T: AsFd> AsyncRead for &Async<T>
where
    for<'a> &'a T: Read,
{
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(context, false, |mut io| io.read(buffer))
    }
}

impl<T: AsFd> AsyncWrite for &Async<T>
where
    for<'a> &'a T: Write,
{
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_now(context, buffer)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A future that completes at a deadline (with the deadline), on this thread's reactor.
pub struct Timer {
    deadline: Instant,
    /// Set while its waker is in the reactor's list.
    id: Option<u64>,
    /// `None` only if this thread could not create a reactor: such a timer never fires (the
    /// worker reports that error when it starts, before any timer exists).
    reactor: Option<Rc<Reactor>>,
}

impl Timer {
    /// Completes at `deadline`.
    pub fn at(deadline: Instant) -> Timer {
        Timer {
            deadline,
            id: None,
            reactor: Reactor::current().ok(),
        }
    }

    /// Completes after `duration`.
    pub fn after(duration: Duration) -> Timer {
        Timer::at(Instant::now() + duration)
    }
}

impl Future for Timer {
    type Output = Instant;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Instant> {
        let this = &mut *self;
        let Some(reactor) = &this.reactor else {
            return Poll::Pending;
        };
        let mut timers = reactor.timers.borrow_mut();
        if Instant::now() >= this.deadline {
            if let Some(id) = this.id.take() {
                timers.remove(&(this.deadline, id));
            }
            return Poll::Ready(this.deadline);
        }
        let id = *this.id.get_or_insert_with(|| {
            let id = reactor.next_timer_id.get();
            reactor.next_timer_id.set(id.wrapping_add(1));
            id
        });
        match timers.get_mut(&(this.deadline, id)) {
            Some(waker) if waker.will_wake(context.waker()) => {}
            Some(waker) => *waker = context.waker().clone(),
            None => {
                timers.insert((this.deadline, id), context.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let (Some(reactor), Some(id)) = (&self.reactor, self.id) {
            reactor.timers.borrow_mut().remove(&(self.deadline, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_reader_waits_for_data_written_later_and_sees_the_close() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut theirs = theirs;
            theirs.write_all(b"hello").unwrap();
        });
        let received = block_on(async {
            let ours = Async::new(ours).unwrap();
            let mut all = Vec::new();
            let mut chunk = [0u8; 2];
            loop {
                match (&ours).read(&mut chunk).await.unwrap() {
                    0 => break all,
                    count => all.extend_from_slice(&chunk[..count]),
                }
            }
        })
        .unwrap();
        writer.join().unwrap();
        assert_eq!(received, b"hello");
    }

    #[test]
    fn a_wakeup_ends_a_wait_for_input_and_is_kept_when_nobody_waits() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        block_on(async {
            let ours = Async::new(ours).unwrap();
            let wakeup = ours.wakeup();
            // Sent before anyone waits: the next poll sees it.
            wakeup.wake();
            poll_fn(|context| ours.poll_woken(context)).await;
            // Nothing to read: the socket is found drained and the task waits for either.
            let mut chunk = [0u8; 4];
            assert_eq!(
                ours.read_now(&mut chunk).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            let woken = Rc::new(Cell::new(false));
            let waiter = {
                let woken = woken.clone();
                let ours = &ours;
                async move {
                    poll_fn(|context| {
                        if ours.poll_woken(context).is_ready() {
                            return Poll::Ready(());
                        }
                        ours.poll_readable(context).map(|_| ())
                    })
                    .await;
                    woken.set(true);
                }
            };
            let waker = async {
                Timer::after(Duration::from_millis(10)).await;
                assert!(!woken.get());
                wakeup.wake();
                // The waiter is woken by it, though the socket still has nothing to say.
                Timer::after(Duration::from_secs(5)).await;
            };
            future::or(waiter, waker).await;
            assert!(woken.get());
        })
        .unwrap();
    }

    #[test]
    fn writes_that_fill_the_socket_wait_for_the_reader() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let total = 4 * 1024 * 1024;
        let reader = std::thread::spawn(move || {
            let mut theirs = theirs;
            let mut count = 0;
            let mut chunk = vec![0u8; 65536];
            loop {
                match theirs.read(&mut chunk).unwrap() {
                    0 => break count,
                    n => count += n,
                }
            }
        });
        block_on(async {
            let ours = Async::new(ours).unwrap();
            let block = vec![7u8; total];
            (&ours).write_all(&block).await.unwrap();
        })
        .unwrap();
        assert_eq!(reader.join().unwrap(), total);
    }

    #[test]
    fn one_waiter_is_woken_by_input_while_it_also_waits_for_room_to_write() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let block = vec![3u8; 1 << 16];
        let (written, byte) = block_on(async {
            let ours = Async::new(ours).unwrap();
            // Fill the socket: the next write has to wait for room.
            let mut written = 0;
            future::poll_fn(|context| {
                loop {
                    match Pin::new(&mut &ours).poll_write(context, &block) {
                        Poll::Ready(result) => written += result.unwrap(),
                        Poll::Pending => return Poll::Ready(()),
                    }
                }
            })
            .await;
            assert!(!ours.registration.with(|r| r.writable.get()));
            // The peer sends a byte and reads nothing: only input can end this wait, through
            // the one waiter the write above left.
            let sender = std::thread::spawn(move || {
                theirs.write_all(&[42]).unwrap();
                theirs
            });
            let mut byte = [0u8; 1];
            future::poll_fn(|context| {
                if let Poll::Ready(result) = Pin::new(&mut &ours).poll_write(context, &block) {
                    written += result.unwrap();
                }
                Pin::new(&mut &ours).poll_read(context, &mut byte)
            })
            .await
            .unwrap();
            let mut theirs = sender.join().unwrap();
            // Now the peer drains what was written; room to write wakes the same waiter.
            let total = written + block.len();
            let drainer = std::thread::spawn(move || {
                let mut chunk = vec![0u8; 1 << 16];
                let mut count = 0;
                while count < total {
                    count += theirs.read(&mut chunk).unwrap();
                }
                count
            });
            (&ours).write_all(&block).await.unwrap();
            assert_eq!(drainer.join().unwrap(), total);
            (total, byte[0])
        })
        .unwrap();
        assert_eq!(byte, 42);
        assert!(written > block.len());
    }

    #[test]
    fn a_wakeup_kept_after_its_source_is_gone_wakes_nothing() {
        block_on(async {
            let first = Async::new(UnixStream::pair().unwrap().0).unwrap();
            let stale = first.wakeup();
            let key = first.registration.key;
            drop(first);
            let second = Async::new(UnixStream::pair().unwrap().0).unwrap();
            assert_eq!(second.registration.key, key, "the slot is taken again");
            stale.wake();
            assert!(!second.registration.with(|r| r.woken.get()));
            second.wakeup().wake();
            assert!(second.registration.with(|r| r.woken.get()));
        })
        .unwrap();
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_source_costs_a_generation_three_flags_and_one_waker() {
        assert_eq!(std::mem::size_of::<Readiness>(), 24);
    }

    #[test]
    fn timers_fire_in_deadline_order_and_a_dropped_one_never_does() {
        let order = block_on(async {
            let order = Rc::new(RefCell::new(Vec::new()));
            let start = Instant::now();
            let late = {
                let order = order.clone();
                async move {
                    Timer::at(start + Duration::from_millis(60)).await;
                    order.borrow_mut().push("late");
                }
            };
            let early = {
                let order = order.clone();
                async move {
                    Timer::after(Duration::from_millis(20)).await;
                    order.borrow_mut().push("early");
                }
            };
            // Dropped when `early` wins the race below: it must leave the list.
            let cancelled = async {
                Timer::after(Duration::from_millis(40)).await;
            };
            future::or(early, cancelled).await;
            late.await;
            let reactor = Reactor::current().unwrap();
            assert!(reactor.timers.borrow().is_empty());
            assert!(start.elapsed() >= Duration::from_millis(60));
            order.take()
        })
        .unwrap();
        assert_eq!(order, ["early", "late"]);
    }

    #[test]
    fn a_wake_from_another_thread_interrupts_the_wait() {
        let (sender, receiver) = std::sync::mpsc::channel::<Waker>();
        let waker_thread = std::thread::spawn(move || {
            let waker = receiver.recv().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            waker.wake();
        });
        let mut sent = false;
        let mut sender = Some(sender);
        block_on(poll_fn(|context| {
            if sent {
                return Poll::Ready(());
            }
            sent = true;
            if let Some(sender) = sender.take() {
                sender.send(context.waker().clone()).unwrap();
            }
            Poll::Pending
        }))
        .unwrap();
        waker_thread.join().unwrap();
    }

    #[test]
    fn tcp_connect_accept_and_exchange() {
        let echoed = block_on(async {
            let listener = Async::new(TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
            let address = listener.get_ref().local_addr().unwrap();
            let server = async {
                let (stream, _) = listener.accept().await.unwrap();
                let mut buffer = [0u8; 4];
                (&stream).read_exact(&mut buffer).await.unwrap();
                (&stream).write_all(&buffer).await.unwrap();
            };
            let client = async {
                let stream = Async::<TcpStream>::connect(address).await.unwrap();
                (&stream).write_all(b"ping").await.unwrap();
                let mut buffer = [0u8; 4];
                (&stream).read_exact(&mut buffer).await.unwrap();
                buffer
            };
            future::zip(server, client).await.1
        })
        .unwrap();
        assert_eq!(&echoed, b"ping");
    }

    #[test]
    fn connecting_to_a_closed_port_fails() {
        let address = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let result = block_on(Async::<TcpStream>::connect(address)).unwrap();
        assert!(result.is_err());
    }

    #[test]
    fn freed_keys_are_reused_and_the_table_shrinks() {
        block_on(async {
            let reactor = Reactor::current().unwrap();
            let streams: Vec<_> = (0..200)
                .map(|_| Async::new(UnixStream::pair().unwrap().0).unwrap())
                .collect();
            let peak = reactor.sources.borrow().len();
            assert!(peak >= 200);
            drop(streams);
            assert!(reactor.sources.borrow().len() < peak);
            let again = Async::new(UnixStream::pair().unwrap().0).unwrap();
            assert!((again.registration.key as usize) < peak);
        })
        .unwrap();
    }
}
