/*
 * The relay's native UDP data path (Linux): a Node-API addon that owns the relay's UDP sockets
 * (the client listener and every allocation's relay socket) and forwards channel traffic itself.
 *
 * One thread per engine waits on epoll, drains ready sockets with recvmmsg (up to BATCH datagrams
 * per call, into buffers reused for the engine's life) and sends with sendmmsg, batching
 * consecutive datagrams for one socket. A datagram that matches a route is forwarded without
 * reaching JavaScript:
 *
 *   client -> peer: ChannelData on a listener from (client, channel) -> payload from the
 *                   allocation's relay socket to the channel's peer;
 *   peer -> client: a datagram on a relay socket from the channel's peer -> ChannelData
 *                   (4-byte header + payload, gathered, no copy) from the listener to the client.
 *
 * Everything else (STUN requests, indications, traffic with no live route, malformed input) is
 * copied and handed to JavaScript through a thread-safe function; the TURN core there decides,
 * exactly as without this addon. Routes are installed, refreshed and removed by the core (one per
 * channel binding of a UDP client); each carries the time it stops being valid (the earlier of the
 * channel's and its permission's expiry), so an expired route is never used even before the core's
 * timer removes it. The token bucket of each allocation (RELAY_BANDWIDTH) lives here and the core
 * takes from it too, so both paths share one cap.
 *
 * Locking: one mutex guards the socket table, the routes and the buckets. The thread holds it
 * while it handles one socket's batch; JavaScript takes it for each call that reads or changes
 * them. Listener sockets are closed only after the thread has stopped, so sends on them need no lock.
 *
 * Input from the network is never trusted: lengths come from the kernel, ChannelData's own length
 * field is checked against the datagram, and a full queue to JavaScript drops (and counts) the
 * datagram instead of growing.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
#define MAX_DGRAM 65536
#define MAX_EVENTS 64
/*
 * Datagrams waiting for JavaScript, by count and by bytes; past either they are dropped and
 * counted, so a flood of large datagrams while the event loop is busy holds at most 16 MiB.
 */
#define SLOW_QUEUE_MAX 8192
#define SLOW_QUEUE_MAX_BYTES (16 * 1024 * 1024)
/* recvmmsg calls per ready socket per wake-up, so one busy socket cannot starve the others. */
#define ROUNDS_PER_WAKE 4
#define WAKE_TAG UINT64_MAX

enum { K_FREE = 0, K_LISTENER = 1, K_RELAY = 2 };

/* Counters handed to JavaScript as deltas by stats(). */
enum {
  S_PACKETS_TO_PEER,
  S_BYTES_TO_PEER,
  S_PACKETS_TO_CLIENT,
  S_BYTES_TO_CLIENT,
  S_DROP_BANDWIDTH,
  S_DROP_SEND_FAILED,
  S_DROP_BACKLOG,
  S_HAIRPIN,
  S_COUNT
};

typedef struct {
  uint8_t family; /* 4 or 6 */
  uint16_t port;
  uint8_t ip[16];
} Addr;

typedef struct Route {
  struct Route *next_c, *next_p, *next_s; /* by-client chain, by-peer chain, relay socket's list */
  uint32_t listener;
  Addr client;
  struct sockaddr_storage client_sa;
  socklen_t client_len;
  uint16_t channel;
  uint32_t relay;
  Addr peer;
  struct sockaddr_storage peer_sa;
  socklen_t peer_len;
  double expires_at; /* ms since the epoch, as Date.now() */
  /*
   * Hairpin: the peer is another allocation of this process (relay socket hp_slot, as it was at
   * generation hp_gen), which sees this allocation's relayed address as hp_from. -1: none.
   */
  int64_t hp_slot;
  uint32_t hp_gen;
  Addr hp_from;
} Route;

typedef struct {
  int fd;
  int kind;
  int family;
  uint32_t gen;
  double relay_id;
  double tokens, tokens_at;
  Route *routes;
} Sock;

typedef struct {
  int kind;
  double id; /* listener slot, or the relay id */
  char ip[INET6_ADDRSTRLEN];
  int port;
  size_t len;
  uint8_t data[];
} Slow;

typedef struct {
  pthread_mutex_t mu;
  pthread_t thread;
  int started, closed;
  int hooked; /* the env cleanup hook is registered */
  int ep, wake;
  volatile int stop;
  Sock *socks;
  uint32_t nsocks, capsocks;
  Route **by_client, **by_peer;
  size_t nbuckets, nroutes;
  double rate, burst;
  napi_threadsafe_function tsfn;
  int slow_pending;      /* incremented by the thread, decremented in JavaScript */
  int64_t slow_bytes;    /* the same, in payload bytes */
  uint64_t stats[S_COUNT];
  /* thread-only buffers */
  uint8_t *rbuf;
  struct mmsghdr rmsg[BATCH];
  struct iovec riov[BATCH];
  struct sockaddr_storage rsa[BATCH];
  struct mmsghdr smsg[BATCH];
  struct iovec siov[BATCH][2];
  uint8_t shdr[BATCH][4];
  int sfd, scount;
} Engine;

/* ------------------------------------------------------------------ helpers */

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)(ts.tv_nsec / 1000000);
}

static void sa_to_addr(const struct sockaddr_storage *sa, Addr *a) {
  memset(a, 0, sizeof(*a));
  if (sa->ss_family == AF_INET) {
    const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
    a->family = 4;
    a->port = ntohs(s->sin_port);
    memcpy(a->ip, &s->sin_addr, 4);
  } else if (sa->ss_family == AF_INET6) {
    const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
    a->family = 6;
    a->port = ntohs(s->sin6_port);
    memcpy(a->ip, &s->sin6_addr, 16);
  }
}

/* Parses an IP literal; the family of the socket it is for decides how. 0 on success. */
static int parse_addr(const char *ip, int port, int family, Addr *a, struct sockaddr_storage *sa, socklen_t *len) {
  memset(a, 0, sizeof(*a));
  memset(sa, 0, sizeof(*sa));
  if (port < 0 || port > 65535) return -1;
  if (family == 4) {
    struct sockaddr_in *s = (struct sockaddr_in *)sa;
    if (inet_pton(AF_INET, ip, &s->sin_addr) != 1) return -1;
    s->sin_family = AF_INET;
    s->sin_port = htons((uint16_t)port);
    *len = sizeof(*s);
  } else {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)sa;
    if (inet_pton(AF_INET6, ip, &s->sin6_addr) != 1) {
      /* An IPv4 client on a dual-stack IPv6 listener is seen as ::ffff:a.b.c.d. */
      struct in_addr v4;
      if (inet_pton(AF_INET, ip, &v4) != 1) return -1;
      memset(&s->sin6_addr, 0, 16);
      s->sin6_addr.s6_addr[10] = 0xff;
      s->sin6_addr.s6_addr[11] = 0xff;
      memcpy(&s->sin6_addr.s6_addr[12], &v4, 4);
    }
    s->sin6_family = AF_INET6;
    s->sin6_port = htons((uint16_t)port);
    *len = sizeof(*s);
  }
  sa_to_addr(sa, a);
  return 0;
}

static uint64_t mix(uint64_t h, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
  return h;
}

static uint64_t hash_addr(uint64_t h, const Addr *a) {
  h = mix(h, &a->family, 1);
  h = mix(h, &a->port, 2);
  return mix(h, a->ip, a->family == 4 ? 4 : 16);
}

static int addr_eq(const Addr *x, const Addr *y) {
  return x->family == y->family && x->port == y->port && memcmp(x->ip, y->ip, 16) == 0;
}

static size_t key_client(const Engine *e, uint32_t listener, const Addr *client, uint16_t channel) {
  uint64_t h = 0xcbf29ce484222325ULL;
  h = mix(h, &listener, 4);
  h = mix(h, &channel, 2);
  return (size_t)(hash_addr(h, client) & (e->nbuckets - 1));
}

static size_t key_peer(const Engine *e, uint32_t relay, const Addr *peer) {
  uint64_t h = 0x84222325cbf29ce4ULL;
  h = mix(h, &relay, 4);
  return (size_t)(hash_addr(h, peer) & (e->nbuckets - 1));
}

static void table_insert(Engine *e, Route *r) {
  size_t kc = key_client(e, r->listener, &r->client, r->channel);
  size_t kp = key_peer(e, r->relay, &r->peer);
  r->next_c = e->by_client[kc];
  e->by_client[kc] = r;
  r->next_p = e->by_peer[kp];
  e->by_peer[kp] = r;
}

static void table_remove(Engine *e, Route *r) {
  Route **pp = &e->by_client[key_client(e, r->listener, &r->client, r->channel)];
  while (*pp && *pp != r) pp = &(*pp)->next_c;
  if (*pp) *pp = r->next_c;
  pp = &e->by_peer[key_peer(e, r->relay, &r->peer)];
  while (*pp && *pp != r) pp = &(*pp)->next_p;
  if (*pp) *pp = r->next_p;
}

/* Doubles the bucket arrays once routes outnumber them (load factor <= 1). */
static int table_grow(Engine *e) {
  size_t n = e->nbuckets * 2;
  Route **c = calloc(n, sizeof(Route *)), **p = calloc(n, sizeof(Route *));
  if (!c || !p) {
    free(c);
    free(p);
    return -1;
  }
  free(e->by_client);
  free(e->by_peer);
  e->by_client = c;
  e->by_peer = p;
  e->nbuckets = n;
  for (uint32_t i = 0; i < e->nsocks; i++)
    for (Route *r = e->socks[i].routes; r; r = r->next_s) table_insert(e, r);
  return 0;
}

static Route *find_client(const Engine *e, uint32_t listener, const Addr *client, uint16_t channel) {
  for (Route *r = e->by_client[key_client(e, listener, client, channel)]; r; r = r->next_c)
    if (r->listener == listener && r->channel == channel && addr_eq(&r->client, client)) return r;
  return NULL;
}

static Route *find_peer(const Engine *e, uint32_t relay, const Addr *peer) {
  for (Route *r = e->by_peer[key_peer(e, relay, peer)]; r; r = r->next_p)
    if (r->relay == relay && addr_eq(&r->peer, peer)) return r;
  return NULL;
}

static int take_tokens(Engine *e, Sock *s, double bytes, double now) {
  if (e->rate <= 0) return 1;
  if (now > s->tokens_at) {
    double t = s->tokens + ((now - s->tokens_at) * e->rate) / 1000.0;
    s->tokens = t < e->burst ? t : e->burst;
    s->tokens_at = now;
  }
  if (s->tokens < bytes) return 0;
  s->tokens -= bytes;
  return 1;
}

static void close_sock(Engine *e, uint32_t slot) {
  Sock *s = &e->socks[slot];
  if (s->kind == K_FREE) return;
  Route *r = s->routes;
  while (r) {
    Route *next = r->next_s;
    table_remove(e, r);
    free(r);
    e->nroutes--;
    r = next;
  }
  s->routes = NULL;
  epoll_ctl(e->ep, EPOLL_CTL_DEL, s->fd, NULL);
  close(s->fd);
  s->fd = -1;
  s->kind = K_FREE;
  s->gen++;
}

/* ------------------------------------------------------------- the thread */

static void flush_sends(Engine *e) {
  int off = 0;
  while (off < e->scount) {
    int r = sendmmsg(e->sfd, e->smsg + off, (unsigned)(e->scount - off), MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      /* The first unsent datagram failed (buffer full, ICMP error pending, ...): it is lost. */
      e->stats[S_DROP_SEND_FAILED]++;
      off++;
      continue;
    }
    off += r;
  }
  e->scount = 0;
  e->sfd = -1;
}

static void queue_send(Engine *e, int fd, const uint8_t *hdr, const uint8_t *data, size_t len, const struct sockaddr_storage *to, socklen_t to_len) {
  if (e->scount == BATCH || (e->scount > 0 && e->sfd != fd)) flush_sends(e);
  int i = e->scount++;
  e->sfd = fd;
  struct iovec *iov = e->siov[i];
  int n = 0;
  if (hdr) {
    memcpy(e->shdr[i], hdr, 4);
    iov[n].iov_base = e->shdr[i];
    iov[n].iov_len = 4;
    n++;
  }
  iov[n].iov_base = (void *)data;
  iov[n].iov_len = len;
  n++;
  struct msghdr *m = &e->smsg[i].msg_hdr;
  memset(m, 0, sizeof(*m));
  m->msg_name = (void *)to;
  m->msg_namelen = to_len;
  m->msg_iov = iov;
  m->msg_iovlen = (size_t)n;
}

static void to_js(Engine *e, int kind, double id, const struct sockaddr_storage *from, const uint8_t *data, size_t len) {
  if (__atomic_load_n(&e->slow_pending, __ATOMIC_RELAXED) >= SLOW_QUEUE_MAX ||
      __atomic_load_n(&e->slow_bytes, __ATOMIC_RELAXED) + (int64_t)len > SLOW_QUEUE_MAX_BYTES) {
    e->stats[S_DROP_BACKLOG]++;
    return;
  }
  Slow *s = malloc(sizeof(Slow) + len);
  if (!s) {
    e->stats[S_DROP_BACKLOG]++;
    return;
  }
  s->kind = kind;
  s->id = id;
  s->len = len;
  memcpy(s->data, data, len);
  if (from->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)from;
    inet_ntop(AF_INET, &a->sin_addr, s->ip, sizeof(s->ip));
    s->port = ntohs(a->sin_port);
  } else {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)from;
    inet_ntop(AF_INET6, &a->sin6_addr, s->ip, sizeof(s->ip));
    s->port = ntohs(a->sin6_port);
  }
  __atomic_add_fetch(&e->slow_pending, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&e->slow_bytes, (int64_t)len, __ATOMIC_RELAXED);
  if (napi_call_threadsafe_function(e->tsfn, s, napi_tsfn_nonblocking) != napi_ok) {
    __atomic_sub_fetch(&e->slow_pending, 1, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&e->slow_bytes, (int64_t)len, __ATOMIC_RELAXED);
    free(s);
    e->stats[S_DROP_BACKLOG]++;
  }
}

static void on_listener_datagram(Engine *e, uint32_t slot, const uint8_t *d, size_t n, const struct sockaddr_storage *from, double now) {
  if (n >= 4 && (d[0] & 0xc0) == 0x40) {
    uint16_t channel = (uint16_t)((d[0] << 8) | d[1]);
    size_t len = (size_t)((d[2] << 8) | d[3]);
    if (4 + len <= n) {
      Addr a;
      sa_to_addr(from, &a);
      Route *r = find_client(e, slot, &a, channel);
      if (r && r->expires_at > now && r->hp_slot >= 0) {
        /*
         * To another allocation here: straight to its client as ChannelData on its channel for our
         * relayed address, as the core's hairpin does, when that channel is live; else the core
         * decides (a Data indication, a drop, or through the kernel if the target is gone).
         */
        Sock *ts = &e->socks[r->hp_slot];
        Route *r2 = (ts->kind == K_RELAY && ts->gen == r->hp_gen) ? find_peer(e, (uint32_t)r->hp_slot, &r->hp_from) : NULL;
        if (r2 && r2->expires_at > now) {
          if (!take_tokens(e, &e->socks[r->relay], (double)len, now) || !take_tokens(e, ts, (double)len, now)) {
            e->stats[S_DROP_BANDWIDTH]++;
            return;
          }
          uint8_t hdr[4] = {(uint8_t)(r2->channel >> 8), (uint8_t)r2->channel, d[2], d[3]};
          queue_send(e, e->socks[r2->listener].fd, hdr, d + 4, len, &r2->client_sa, r2->client_len);
          e->stats[S_PACKETS_TO_PEER]++;
          e->stats[S_BYTES_TO_PEER] += len;
          e->stats[S_PACKETS_TO_CLIENT]++;
          e->stats[S_BYTES_TO_CLIENT] += len;
          e->stats[S_HAIRPIN]++;
          return;
        }
      } else if (r && r->expires_at > now) {
        Sock *rs = &e->socks[r->relay];
        if (!take_tokens(e, rs, (double)len, now)) {
          e->stats[S_DROP_BANDWIDTH]++;
          return;
        }
        queue_send(e, rs->fd, NULL, d + 4, len, &r->peer_sa, r->peer_len);
        e->stats[S_PACKETS_TO_PEER]++;
        e->stats[S_BYTES_TO_PEER] += len;
        return;
      }
    }
  }
  to_js(e, K_LISTENER, slot, from, d, n);
}

static void on_relay_datagram(Engine *e, uint32_t slot, Sock *s, const uint8_t *d, size_t n, const struct sockaddr_storage *from, double now) {
  Addr a;
  sa_to_addr(from, &a);
  Route *r = find_peer(e, slot, &a);
  if (r && r->expires_at > now && n <= 0xffff) {
    if (!take_tokens(e, s, (double)n, now)) {
      e->stats[S_DROP_BANDWIDTH]++;
      return;
    }
    uint8_t hdr[4] = {(uint8_t)(r->channel >> 8), (uint8_t)r->channel, (uint8_t)(n >> 8), (uint8_t)n};
    queue_send(e, e->socks[r->listener].fd, hdr, d, n, &r->client_sa, r->client_len);
    e->stats[S_PACKETS_TO_CLIENT]++;
    e->stats[S_BYTES_TO_CLIENT] += n;
    return;
  }
  to_js(e, K_RELAY, s->relay_id, from, d, n);
}

/* Handles up to ROUNDS_PER_WAKE batches of one ready socket. Called with the lock held. */
static void drain(Engine *e, uint32_t slot, uint32_t gen) {
  for (int round = 0; round < ROUNDS_PER_WAKE; round++) {
    if (slot >= e->nsocks) return;
    Sock *s = &e->socks[slot];
    if (s->kind == K_FREE || s->gen != gen) return;
    for (int i = 0; i < BATCH; i++) {
      e->rmsg[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
      e->rmsg[i].msg_hdr.msg_flags = 0;
      e->riov[i].iov_len = MAX_DGRAM;
    }
    int got = recvmmsg(s->fd, e->rmsg, BATCH, MSG_DONTWAIT, NULL);
    if (got <= 0) return;
    double now = now_ms();
    for (int i = 0; i < got; i++) {
      const uint8_t *d = e->rbuf + (size_t)i * MAX_DGRAM;
      size_t n = e->rmsg[i].msg_len;
      if (e->rmsg[i].msg_hdr.msg_flags & MSG_TRUNC) continue; /* cannot happen with 64 KiB buffers */
      if (s->kind == K_LISTENER) on_listener_datagram(e, slot, d, n, &e->rsa[i], now);
      else on_relay_datagram(e, slot, s, d, n, &e->rsa[i], now);
    }
    /* Queued sends point into the receive buffers: out before they are reused. */
    flush_sends(e);
    if (got < BATCH) return;
  }
}

static void *run(void *arg) {
  Engine *e = arg;
  struct epoll_event ev[MAX_EVENTS];
  while (!e->stop) {
    int n = epoll_wait(e->ep, ev, MAX_EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < n && !e->stop; i++) {
      uint64_t tag = ev[i].data.u64;
      if (tag == WAKE_TAG) {
        uint64_t v;
        if (read(e->wake, &v, sizeof(v)) < 0) { /* nothing to do */ }
        continue;
      }
      pthread_mutex_lock(&e->mu);
      drain(e, (uint32_t)(tag & 0xffffffffu), (uint32_t)(tag >> 32));
      pthread_mutex_unlock(&e->mu);
    }
  }
  return NULL;
}

/* ------------------------------------------------------- JavaScript side */

#define CHECK(env, call)                                   \
  do {                                                     \
    if ((call) != napi_ok) {                               \
      napi_throw_error((env), NULL, "native udp: " #call); \
      return NULL;                                         \
    }                                                      \
  } while (0)

static napi_value throw_code(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

static napi_value num(napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  Slow *s = data;
  /*
   * No env: the function is being torn down after close (its queue is emptied this way), and the
   * engine may already be freed, so only the datagram is touched.
   */
  if (env == NULL) {
    free(s);
    return;
  }
  Engine *e = context;
  __atomic_sub_fetch(&e->slow_pending, 1, __ATOMIC_RELAXED);
  __atomic_sub_fetch(&e->slow_bytes, (int64_t)s->len, __ATOMIC_RELAXED);
  if (e->closed) {
    free(s);
    return;
  }
  napi_value argv[5], undef, buf;
  void *copy;
  if (napi_create_buffer_copy(env, s->len, s->data, &copy, &buf) != napi_ok) {
    free(s);
    return;
  }
  argv[0] = num(env, s->kind);
  argv[1] = num(env, s->id);
  napi_create_string_latin1(env, s->ip, NAPI_AUTO_LENGTH, &argv[2]);
  argv[3] = num(env, s->port);
  argv[4] = buf;
  free(s);
  napi_get_undefined(env, &undef);
  napi_call_function(env, undef, cb, 5, argv, NULL);
}

static void stop_engine(Engine *e) {
  if (e->closed) return;
  e->closed = 1;
  if (e->started) {
    e->stop = 1;
    uint64_t one = 1;
    if (write(e->wake, &one, sizeof(one)) < 0) { /* the thread also stops on the next datagram */ }
    pthread_join(e->thread, NULL);
  }
  pthread_mutex_lock(&e->mu);
  for (uint32_t i = 0; i < e->nsocks; i++) close_sock(e, i);
  pthread_mutex_unlock(&e->mu);
  if (e->tsfn) napi_release_threadsafe_function(e->tsfn, napi_tsfn_abort);
  e->tsfn = NULL;
}

static void cleanup_hook(void *arg);

static void finalize_engine(napi_env env, void *data, void *hint) {
  (void)hint;
  Engine *e = data;
  if (e->hooked && env) napi_remove_env_cleanup_hook(env, cleanup_hook, e);
  e->hooked = 0;
  stop_engine(e);
  close(e->ep);
  close(e->wake);
  pthread_mutex_destroy(&e->mu);
  free(e->socks);
  free(e->by_client);
  free(e->by_peer);
  free(e->rbuf);
  free(e);
}

/* The environment ends (process exit, a worker thread's end) with the engine still open. */
static void cleanup_hook(void *arg) {
  Engine *e = arg;
  e->hooked = 0;
  stop_engine(e);
}

static Engine *engine_of(napi_env env, napi_value v) {
  Engine *e = NULL;
  if (napi_get_value_external(env, v, (void **)&e) != napi_ok || !e) {
    napi_throw_type_error(env, NULL, "native udp: not an engine");
    return NULL;
  }
  if (e->closed) {
    napi_throw_error(env, "ERR_CLOSED", "native udp: engine closed");
    return NULL;
  }
  return e;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "native udp: missing arguments");
    return -1;
  }
  return 0;
}

static int get_int(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "native udp: expected a number");
    return -1;
  }
  return 0;
}

static int get_str(napi_env env, napi_value v, char *buf, size_t cap) {
  size_t n;
  if (napi_get_value_string_latin1(env, v, buf, cap, &n) != napi_ok || n + 1 >= cap) {
    napi_throw_type_error(env, NULL, "native udp: expected an address string");
    return -1;
  }
  return 0;
}

/* Registers socket `fd` in a free slot and with epoll; returns the slot or -1 (fd closed). */
static int64_t add_sock(Engine *e, int fd, int kind, int family, double relay_id) {
  uint32_t slot = e->nsocks;
  for (uint32_t i = 0; i < e->nsocks; i++)
    if (e->socks[i].kind == K_FREE) {
      slot = i;
      break;
    }
  if (slot == e->nsocks) {
    if (e->nsocks == e->capsocks) {
      uint32_t cap = e->capsocks ? e->capsocks * 2 : 64;
      Sock *n = realloc(e->socks, cap * sizeof(Sock));
      if (!n) {
        close(fd);
        return -1;
      }
      e->socks = n;
      e->capsocks = cap;
    }
    memset(&e->socks[slot], 0, sizeof(Sock));
    e->socks[slot].fd = -1;
    e->nsocks++;
  }
  Sock *s = &e->socks[slot];
  s->fd = fd;
  s->kind = kind;
  s->family = family;
  s->relay_id = relay_id;
  s->tokens = e->burst;
  s->tokens_at = now_ms();
  s->routes = NULL;
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((uint64_t)s->gen << 32) | slot};
  if (epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
    close(fd);
    s->fd = -1;
    s->kind = K_FREE;
    return -1;
  }
  return slot;
}

/* Opens and binds a UDP socket; returns the fd or -errno. */
static int open_udp(int family, const char *host, int port, int reuse_port, int buf_bytes, int v6only) {
  Addr a;
  struct sockaddr_storage sa;
  socklen_t len;
  if (parse_addr(host, port, family, &a, &sa, &len) != 0) return -EINVAL;
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  if (family == 6) {
    int v = v6only ? 1 : 0;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof(v));
  }
  if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  if (buf_bytes > 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf_bytes, sizeof(buf_bytes));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf_bytes, sizeof(buf_bytes));
  }
  if (bind(fd, (struct sockaddr *)&sa, len) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  return fd;
}

static napi_value err_code(napi_env env, int neg) {
  /* Errors that JavaScript handles (EADDRINUSE, ...) come back as negative errno values. */
  return num(env, neg);
}

/* create(onDatagram(kind, id, ip, port, buffer), bandwidthBytesPerSecond, burstBytes) -> engine */
static napi_value js_create(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (get_args(env, info, 3, argv)) return NULL;
  double rate, burst;
  CHECK(env, napi_get_value_double(env, argv[1], &rate));
  CHECK(env, napi_get_value_double(env, argv[2], &burst));
  Engine *e = calloc(1, sizeof(Engine));
  if (!e) return throw_code(env, "ENOMEM", "native udp: out of memory");
  e->rate = rate;
  e->burst = burst;
  e->sfd = -1;
  e->nbuckets = 256;
  e->by_client = calloc(e->nbuckets, sizeof(Route *));
  e->by_peer = calloc(e->nbuckets, sizeof(Route *));
  e->rbuf = malloc((size_t)BATCH * MAX_DGRAM);
  e->ep = epoll_create1(EPOLL_CLOEXEC);
  e->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  pthread_mutex_init(&e->mu, NULL);
  if (!e->by_client || !e->by_peer || !e->rbuf || e->ep < 0 || e->wake < 0) {
    e->closed = 1;
    finalize_engine(env, e, NULL);
    return throw_code(env, "ENOMEM", "native udp: could not set up the engine");
  }
  for (int i = 0; i < BATCH; i++) {
    e->riov[i].iov_base = e->rbuf + (size_t)i * MAX_DGRAM;
    e->riov[i].iov_len = MAX_DGRAM;
    memset(&e->rmsg[i], 0, sizeof(e->rmsg[i]));
    e->rmsg[i].msg_hdr.msg_name = &e->rsa[i];
    e->rmsg[i].msg_hdr.msg_iov = &e->riov[i];
    e->rmsg[i].msg_hdr.msg_iovlen = 1;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_TAG};
  epoll_ctl(e->ep, EPOLL_CTL_ADD, e->wake, &ev);
  napi_value name;
  napi_create_string_utf8(env, "homelink-udp", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, e, call_js, &e->tsfn) != napi_ok) {
    e->closed = 1;
    finalize_engine(env, e, NULL);
    return throw_code(env, "EINVAL", "native udp: onDatagram must be a function");
  }
  /* The engine does not keep the process alive; the relay's own handles do. */
  napi_unref_threadsafe_function(env, e->tsfn);
  napi_add_env_cleanup_hook(env, cleanup_hook, e);
  e->hooked = 1;
  napi_value out;
  if (napi_create_external(env, e, finalize_engine, NULL, &out) != napi_ok) {
    finalize_engine(env, e, NULL);
    return throw_code(env, "ENOMEM", "native udp: could not wrap the engine");
  }
  return out;
}

/* listen(engine, family, host, port, reusePort, bufferBytes) -> slot | -errno */
static napi_value js_listen(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (get_args(env, info, 6, argv)) return NULL;
  Engine *e = engine_of(env, argv[0]);
  if (!e) return NULL;
  int64_t family, port, buf;
  bool reuse;
  char host[INET6_ADDRSTRLEN + 1];
  if (get_int(env, argv[1], &family) || get_str(env, argv[2], host, sizeof(host)) || get_int(env, argv[3], &port) || get_int(env, argv[5], &buf)) return NULL;
  CHECK(env, napi_get_value_bool(env, argv[4], &reuse));
  int fd = open_udp((int)family, host, (int)port, reuse, (int)buf, 0);
  if (fd < 0) return err_code(env, fd);
  pthread_mutex_lock(&e->mu);
  int64_t slot = add_sock(e, fd, K_LISTENER, (int)family, -1);
  pthread_mutex_unlock(&e->mu);
  return num(env, slot < 0 ? -ENOMEM : (double)slot);
}

/* bindRelay(engine, relayId, family, host, port) -> slot | -errno */
static napi_value js_bind_relay(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (get_args(env, info, 5, argv)) return NULL;
  Engine *e = engine_of(env, argv[0]);
  if (!e) return NULL;
  double relay_id;
  int64_t family, port;
  char host[INET6_ADDRSTRLEN + 1];
  CHECK(env, napi_get_value_double(env, argv[1], &relay_id));
  if (get_int(env, argv[2], &family) || get_str(env, argv[3], host, sizeof(host)) || get_int(env, argv[4], &port)) return NULL;
  int fd = open_udp((int)family, host, (int)port, 0, 0, 1);
  if (fd < 0) return err_code(env, fd);
  pthread_mutex_lock(&e->mu);
  int64_t slot = add_sock(e, fd, K_RELAY, (int)family, relay_id);
  pthread_mutex_unlock(&e->mu);
  return num(env, slot < 0 ? -ENOMEM : (double)slot);
}

/* port(engine, slot) -> the bound port */
static napi_value js_port(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv)) return NULL;
  Engine *e = engine_of(env, argv[0]);
  int64_t slot;
  if (!e || get_int(env, argv[1], &slot)) return NULL;
  struct sockaddr_storage sa;
  socklen_t len = sizeof(sa);
  int port = -EBADF;
  pthread_mutex_lock(&e->mu);
  if (slot >= 0 && slot < e->nsocks && e->socks[slot].kind != K_FREE && getsockname(e->socks[slot].fd, (struct sockaddr *)&sa, &len) == 0) {
    Addr a;
    sa_to_addr(&sa, &a);
    port = a.port;
  }
  pthread_mutex_unlock(&e->mu);
  return num(env, port);
}

/* closeSocket(engine, slot): closes a relay socket and drops its routes. */
static napi_value js_close_socket(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv)) return NULL;
  Engine *e = engine_of(env, argv[0]);
  int64_t slot;
  if (!e || get_int(env, argv[1], &slot)) return NULL;
  pthread_mutex_lock(&e->mu);
  if (slot >= 0 && slot < e->nsocks && e->socks[slot].kind == K_RELAY) close_sock(e, (uint32_t)slot);
  pthread_mutex_unlock(&e->mu);
  return NULL;
}

/* send(engine, slot, buffer, offset, length, ip, port) -> 0 | -errno */
static napi_value js_send(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (get_args(env, info, 7, argv)) return NULL;
  Engine *e = engine_of(env, argv[0]);
  if (!e) return NULL;
  int64_t slot, off, len, port;
  char ip[INET6_ADDRSTRLEN + 1];
  void *data;
  size_t size;
  if (get_int(env, argv[1], &slot) || get_int(env, argv[3], &off) || get_int(env, argv[4], &len) || get_str(env, argv[5], ip, sizeof(ip)) || get_int(env, argv[6], &port)) return NULL;
  bool is_buf;
  if (napi_is_buffer(env, argv[2], &is_buf) != napi_ok || !is_buf) return throw_code(env, "EINVAL", "native udp: expected a Buffer");
  CHECK(env, napi_get_buffer_info(env, argv[2], &data, &size));
  if (off < 0 || len < 0 || (uint64_t)(off + len) > size) return throw_code(env, "ERR_OUT_OF_RANGE", "native udp: offset or length out of range");
  int rc = 0;
  pthread_mutex_lock(&e->mu);
  if (slot < 0 || slot >= e->nsocks || e->socks[slot].kind == K_FREE) rc = -EBADF;
  else {
    Addr a;
    struct sockaddr_storage sa;
    socklen_t sl;
    Sock *s = &e->socks[slot];
    if (parse_addr(ip, (int)port, s->family, &a, &sa, &sl) != 0) rc = -EINVAL;
    else if (sendto(s->fd, (uint8_t *)data + off, (size_t)len, MSG_DONTWAIT, (struct sockaddr *)&sa, sl) < 0) rc = -errno;
  }
  pthread_mutex_unlock(&e->mu);
  return num(env, rc);
}

/*
 * route(engine, listenerSlot, clientIp, clientPort, channel, relaySlot, peerIp, peerPort, expiresAt,
 *       hairpinSlot, fromIp, fromPort)
 * Installs or refreshes the route of `channel` on relay socket `relaySlot`. With hairpinSlot >= 0
 * the peer is that relay socket's allocation, which knows this one as fromIp:fromPort. -> 0 | -errno
 */
static napi_value js_route(napi_env env, napi_callback_info info) {
  napi_value argv[12];
  if (get_args(env, info, 12, argv)) return NULL;
  Engine *e = engine_of(env, argv[0]);
  if (!e) return NULL;
  int64_t listener, cport, channel, relay, pport;
  double expires_at;
  char cip[INET6_ADDRSTRLEN + 1], pip[INET6_ADDRSTRLEN + 1];
  if (get_int(env, argv[1], &listener) || get_str(env, argv[2], cip, sizeof(cip)) || get_int(env, argv[3], &cport) || get_int(env, argv[4], &channel) ||
      get_int(env, argv[5], &relay) || get_str(env, argv[6], pip, sizeof(pip)) || get_int(env, argv[7], &pport))
    return NULL;
  CHECK(env, napi_get_value_double(env, argv[8], &expires_at));
  int64_t hp_slot, from_port;
  char from_ip[INET6_ADDRSTRLEN + 1];
  if (get_int(env, argv[9], &hp_slot) || get_str(env, argv[10], from_ip, sizeof(from_ip)) || get_int(env, argv[11], &from_port)) return NULL;
  if (channel < 0x4000 || channel > 0x7fff) return num(env, -EINVAL);
  int rc = 0;
  pthread_mutex_lock(&e->mu);
  if (listener < 0 || listener >= e->nsocks || e->socks[listener].kind != K_LISTENER || relay < 0 || relay >= e->nsocks || e->socks[relay].kind != K_RELAY) {
    rc = -EBADF;
    goto out;
  }
  Sock *rs = &e->socks[relay];
  Route *r = rs->routes;
  while (r && r->channel != channel) r = r->next_s;
  Route fresh;
  memset(&fresh, 0, sizeof(fresh));
  fresh.listener = (uint32_t)listener;
  fresh.relay = (uint32_t)relay;
  fresh.channel = (uint16_t)channel;
  fresh.expires_at = expires_at;
  if (parse_addr(cip, (int)cport, e->socks[listener].family, &fresh.client, &fresh.client_sa, &fresh.client_len) != 0 ||
      parse_addr(pip, (int)pport, rs->family, &fresh.peer, &fresh.peer_sa, &fresh.peer_len) != 0) {
    rc = -EINVAL;
    goto out;
  }
  fresh.hp_slot = -1;
  if (hp_slot >= 0) {
    struct sockaddr_storage sa;
    socklen_t sl;
    if (hp_slot >= e->nsocks || e->socks[hp_slot].kind != K_RELAY || parse_addr(from_ip, (int)from_port, e->socks[hp_slot].family, &fresh.hp_from, &sa, &sl) != 0) {
      rc = -EINVAL;
      goto out;
    }
    fresh.hp_slot = hp_slot;
    fresh.hp_gen = e->socks[hp_slot].gen;
  }
  if (r) {
    /* A refresh: same channel, maybe a new expiry (or, after a rebind, the same peer again). */
    table_remove(e, r);
    fresh.next_s = r->next_s;
  } else {
    if (e->nroutes + 1 > e->nbuckets && table_grow(e) != 0) {
      rc = -ENOMEM;
      goto out;
    }
    r = malloc(sizeof(Route));
    if (!r) {
      rc = -ENOMEM;
      goto out;
    }
    fresh.next_s = rs->routes;
    rs->routes = r;
    e->nroutes++;
  }
  *r = fresh;
  table_insert(e, r);
out:
  pthread_mutex_unlock(&e->mu);
  return num(env, rc);
}

/* unroute(engine, relaySlot, channel) */
static napi_value js_unroute(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (get_args(env, info, 3, argv)) return NULL;
  Engine *e = engine_of(env, argv[0]);
  int64_t relay, channel;
  if (!e || get_int(env, argv[1], &relay) || get_int(env, argv[2], &channel)) return NULL;
  pthread_mutex_lock(&e->mu);
  if (relay >= 0 && relay < e->nsocks && e->socks[relay].kind == K_RELAY) {
    Route **pp = &e->socks[relay].routes;
    while (*pp && (*pp)->channel != channel) pp = &(*pp)->next_s;
    if (*pp) {
      Route *r = *pp;
      *pp = r->next_s;
      table_remove(e, r);
      free(r);
      e->nroutes--;
    }
  }
  pthread_mutex_unlock(&e->mu);
  return NULL;
}

/* takeTokens(engine, relaySlot, bytes, now) -> boolean: the allocation's bucket, shared with the thread. */
static napi_value js_take_tokens(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (get_args(env, info, 4, argv)) return NULL;
  Engine *e = engine_of(env, argv[0]);
  int64_t slot;
  double bytes, now;
  if (!e || get_int(env, argv[1], &slot)) return NULL;
  CHECK(env, napi_get_value_double(env, argv[2], &bytes));
  CHECK(env, napi_get_value_double(env, argv[3], &now));
  int ok = 1;
  pthread_mutex_lock(&e->mu);
  if (slot >= 0 && slot < e->nsocks && e->socks[slot].kind == K_RELAY) ok = take_tokens(e, &e->socks[slot], bytes, now);
  pthread_mutex_unlock(&e->mu);
  napi_value out;
  napi_get_boolean(env, ok, &out);
  return out;
}

/* stats(engine) -> number[S_COUNT]: counts since the last call. */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return NULL;
  Engine *e = engine_of(env, argv[0]);
  if (!e) return NULL;
  uint64_t s[S_COUNT];
  pthread_mutex_lock(&e->mu);
  memcpy(s, e->stats, sizeof(s));
  memset(e->stats, 0, sizeof(e->stats));
  pthread_mutex_unlock(&e->mu);
  napi_value arr;
  CHECK(env, napi_create_array_with_length(env, S_COUNT, &arr));
  for (uint32_t i = 0; i < S_COUNT; i++) napi_set_element(env, arr, i, num(env, (double)s[i]));
  return arr;
}

/* start(engine): starts the forwarding thread (after the listeners are bound). */
static napi_value js_start(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return NULL;
  Engine *e = engine_of(env, argv[0]);
  if (!e || e->started) return NULL;
  if (pthread_create(&e->thread, NULL, run, e) != 0) return throw_code(env, "EAGAIN", "native udp: could not start the thread");
  e->started = 1;
  return NULL;
}

/* close(engine): stops the thread and closes every socket. Idempotent. */
static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return NULL;
  Engine *e = NULL;
  if (napi_get_value_external(env, argv[0], (void **)&e) != napi_ok || !e) return NULL;
  if (e->hooked) napi_remove_env_cleanup_hook(env, cleanup_hook, e);
  e->hooked = 0;
  stop_engine(e);
  return NULL;
}

NAPI_MODULE_INIT() {
  static const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"create", js_create},       {"listen", js_listen},   {"bindRelay", js_bind_relay}, {"port", js_port},
      {"closeSocket", js_close_socket}, {"send", js_send}, {"route", js_route},           {"unroute", js_unroute},
      {"takeTokens", js_take_tokens}, {"stats", js_stats}, {"start", js_start},           {"close", js_close},
  };
  for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
    napi_value f;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f) != napi_ok) return NULL;
    if (napi_set_named_property(env, exports, fns[i].name, f) != napi_ok) return NULL;
  }
  return exports;
}
