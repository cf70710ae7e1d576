#!/usr/bin/env node
// Interop client for tests/e2e/test_interop.py: drives a Pomelo hybrid connector serving the demo app
// (see the demo's ROUTES.md) with the official Pomelo JavaScript libraries, used as libraries:
// pomelo-protocol (Package/Message/Protocol), pomelo-protobuf (node build, plus its browser build
// for the browser client's wire-type quirk) and ws.  It behaves like the JS WebSocket client:
// handshake, ACK, heartbeats driven by the server's, route compression through `dict`, protobuf
// through `protos.client` / `protos.server`.
//
// usage: node client.js <host> <port> <tcp|ws>            run every demo route, then kick itself
//        node client.js <host> <port> <tcp|ws> listen [F] wait for one onBroadcast push (whose
//                                                         body.from equals F, when given)
// Prints ONE line of JSON {"ok":..., "steps":{...}, "error":...} on stdout and exits 0 only if
// every step passed.  In listen mode it writes "READY" to stderr once it is bound and waiting.
// Hard timeout: 10 s (INTEROP_TIMEOUT_MS overrides it).
'use strict';

var net = require('net');
var util = require('util');
var WebSocket = require('ws');
var Protocol = require('pomelo-protocol');
var protobuf = require('pomelo-protobuf');
var browserProtobuf = require('pomelo-protobuf/lib/client/protobuf');

var Package = Protocol.Package;
var Message = Protocol.Message;

var HANDSHAKE_BODY = {
  sys: {type: 'js-websocket', version: '0.0.1', rsa: {}, protoVersion: 0},
  user: {}
};
var DEMO_ROUTES = ['bind', 'broadcast', 'echo', 'entry', 'kick', 'notify', 'proto', 'push'];
var P = 'connector.entryHandler.';

var argv = process.argv.slice(2);
var host = argv[0];
var port = parseInt(argv[1], 10);
var transport = argv[2];
var mode = argv[3] || 'run';
var listenFrom = argv[4] || null;
var HARD_TIMEOUT = parseInt(process.env.INTEROP_TIMEOUT_MS || '10000', 10);
// INTEROP_TRACE=1: write every package sent and received, in hex, to stderr.
var TRACE = !!process.env.INTEROP_TRACE;
var T0 = Date.now();
function trace(dir, bytes, note) {
  if (TRACE) {
    process.stderr.write(((Date.now() - T0) / 1000).toFixed(3) + ' ' + dir + ' ' + hex(bytes) +
      (note ? '  [' + note + ']' : '') + '\n');
  }
}

var result = {ok: false, transport: transport, mode: mode, steps: {}, error: null};
var finished = false;

function hex(buf) {
  if (!buf) { return ''; }
  return Buffer.from(buf).toString('hex').replace(/(..)(?!$)/g, '$1 ');
}

function finish(err) {
  if (finished) { return; }
  finished = true;
  if (err) {
    result.error = (err && err.message) ? err.message : String(err);
  }
  var names = Object.keys(result.steps);
  result.ok = !result.error && names.length > 0 && names.every(function (n) { return result.steps[n].ok; });
  try { conn && conn.close(); } catch (e) { /* ignore */ }
  process.stdout.write(JSON.stringify(result) + '\n', function () {
    process.exit(result.ok ? 0 : 1);
  });
}

if (!host || !port || (transport !== 'tcp' && transport !== 'ws') ||
    (mode !== 'run' && mode !== 'listen')) {
  result.error = 'usage: node client.js <host> <port> <tcp|ws> [listen [from]]';
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(2);
}

setTimeout(function () {
  var pending = Object.keys(result.steps).filter(function (n) { return !result.steps[n].ok; });
  finish(new Error('hard timeout of ' + HARD_TIMEOUT + ' ms' +
    (currentStep ? ' during step ' + currentStep : '') +
    (pending.length ? ' (failed: ' + pending.join(', ') + ')' : '')));
}, HARD_TIMEOUT);

process.on('uncaughtException', function (err) { finish(err); });

// ---------------------------------------------------------------------------------------------
// Transport: a raw `net` socket with 4-byte-header framing, or a ws WebSocket (one or more
// packages per binary message, binaryType arraybuffer as in the browser client).

function Connection() {
  this.onPackage = null;   // function({type, body})
  this.onClose = null;     // function(info)
  this.closed = false;
}

Connection.prototype._packages = function (decoded, raw, note) {
  trace('S>C', raw, note);
  var list = Array.isArray(decoded) ? decoded : [decoded];
  for (var i = 0; i < list.length; i++) { this.onPackage(list[i]); }
};

Connection.prototype._closed = function (info) {
  if (this.closed) { return; }
  this.closed = true;
  if (this.onClose) { this.onClose(info); }
};

function connect(cb) {
  var c = new Connection();
  if (transport === 'tcp') {
    var sock = net.connect({host: host, port: port});
    var pending = Buffer.alloc(0);
    sock.setNoDelay(true);
    sock.on('connect', function () { cb(null, c); });
    sock.on('data', function (data) {
      pending = Buffer.concat([pending, data]);
      while (pending.length >= 4) {
        var len = (pending[1] << 16) | (pending[2] << 8) | pending[3];
        if (pending.length < 4 + len) { break; }
        var one = pending.subarray(0, 4 + len);
        pending = pending.subarray(4 + len);
        c._packages(Package.decode(one), one);
      }
    });
    sock.on('error', function (err) { c.lastError = err.message; });
    sock.on('close', function (hadError) {
      c._closed({hadError: hadError, error: c.lastError || null, leftover: pending.length});
    });
    c.send = function (bytes) { trace('C>S', bytes); sock.write(Buffer.from(bytes)); };
    c.close = function () { sock.destroy(); };
  } else {
    var ws = new WebSocket('ws://' + host + ':' + port);
    ws.binaryType = 'arraybuffer';
    ws.on('open', function () { cb(null, c); });
    ws.on('message', function (data, isBinary) {
      if (!isBinary) { c.textFrames = (c.textFrames || 0) + 1; }
      var buf = Buffer.from(data);
      c._packages(Package.decode(buf), buf, isBinary ? 'ws binary message' : 'ws TEXT message');
    });
    ws.on('error', function (err) { c.lastError = err.message; if (!c.opened) { cb(err); } });
    ws.on('open', function () { c.opened = true; });
    ws.on('close', function (code, reason) {
      c._closed({code: code, reason: reason ? reason.toString() : '', error: c.lastError || null});
    });
    c.send = function (bytes) { trace('C>S', bytes); ws.send(Buffer.from(bytes), {binary: true}); };
    c.close = function () { try { ws.terminate(); } catch (e) { /* ignore */ } };
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Pomelo client state, as the JS client keeps it.

var conn = null;
var currentStep = null;
var dict = {};          // route -> code
var abbrs = {};         // code -> route
var protos = {server: {}, client: {}};
var heartbeatInterval = 0;
var heartbeatTimeout = 0;
var heartbeatId = null;
var heartbeatTimeoutId = null;
var nextHeartbeatTimeout = 0;
var hbSent = 0;
var hbRecv = 0;
var reqId = 0;
var routeMap = {};      // request id -> route
var callbacks = {};     // request id -> function(msg)
var pushes = [];        // received pushes {route, compressed, code, body, raw}
var pushWaiters = [];   // {pred, cb}
var kicks = [];
var packageWaiters = []; // {type, cb}
var closeInfo = null;
var closeWaiters = [];
var unexpected = [];

function encodeBody(route, body, pb) {
  if (protos.client[route]) {
    return (pb || protobuf).encode(route, body);
  }
  return Protocol.strencode(JSON.stringify(body));
}

function decodeBody(route, bytes, pb) {
  if (protos.server[route]) {
    return (pb || protobuf).decode(route, Buffer.from(bytes));
  }
  return JSON.parse(Protocol.strdecode(Buffer.from(bytes)));
}

// Send a request; opts.compress: true/false forces the route form (default: as the JS client,
// compressed when the route is in the dict); opts.pb: protobuf implementation to use.
function request(route, body, opts, cb) {
  opts = opts || {};
  var id = ++reqId;
  var type = Message.TYPE_REQUEST;
  var payload = encodeBody(route, body, opts.pb);
  var compress = opts.compress === undefined ? !!dict[route] : opts.compress;
  var wireRoute = compress ? dict[route] : route;
  var msg = Message.encode(id, type, compress ? 1 : 0, wireRoute, payload);
  routeMap[id] = route;
  callbacks[id] = function (m) { cb(m); };
  conn.send(Package.encode(Package.TYPE_DATA, msg));
  return {id: id, compressed: !!compress, body_hex: hex(payload)};
}

function notify(route, body) {
  var payload = encodeBody(route, body);
  var compress = !!dict[route];
  var msg = Message.encode(0, Message.TYPE_NOTIFY, compress ? 1 : 0, compress ? dict[route] : route, payload);
  conn.send(Package.encode(Package.TYPE_DATA, msg));
  return {compressed: compress};
}

function waitPush(pred, cb) {
  for (var i = 0; i < pushes.length; i++) {
    if (pred(pushes[i])) { var p = pushes.splice(i, 1)[0]; return cb(p); }
  }
  pushWaiters.push({pred: pred, cb: cb});
}

function waitPackage(type, cb) {
  packageWaiters.push({type: type, cb: cb});
}

function waitClose(cb) {
  if (closeInfo) { return cb(closeInfo); }
  closeWaiters.push(cb);
}

function sendHeartbeat() {
  heartbeatId = null;
  hbSent++;
  conn.send(Package.encode(Package.TYPE_HEARTBEAT));
  nextHeartbeatTimeout = Date.now() + heartbeatTimeout;
  heartbeatTimeoutId = setTimeout(heartbeatTimeoutCb, heartbeatTimeout);
}

function heartbeatTimeoutCb() {
  var gap = nextHeartbeatTimeout - Date.now();
  if (gap > 100) {
    heartbeatTimeoutId = setTimeout(heartbeatTimeoutCb, gap);
  } else {
    finish(new Error('heartbeat timeout: no package from the server within ' + heartbeatTimeout + ' ms'));
  }
}

function onData(body) {
  var m = Message.decode(body);
  if (m.id > 0) {   // response
    var route = routeMap[m.id];
    delete routeMap[m.id];
    var cb = callbacks[m.id];
    delete callbacks[m.id];
    if (!route || !cb) { unexpected.push({what: 'response to unknown id', id: m.id, hex: hex(body)}); return; }
    var decoded;
    try { decoded = decodeBody(route, m.body, cb.pb); } catch (e) {
      decoded = {__decode_error: e.message};
    }
    cb({id: m.id, type: m.type, flag: body[0], body: decoded, raw: hex(m.body)});
    return;
  }
  if (m.type !== Message.TYPE_PUSH) {
    unexpected.push({what: 'message type ' + m.type + ' without id', hex: hex(body)});
    return;
  }
  var code = null;
  var pushRoute = m.route;
  if (m.compressRoute) {
    code = m.route;
    pushRoute = abbrs[code];
    if (!pushRoute) { unexpected.push({what: 'push with unknown route code ' + code, hex: hex(body)}); return; }
  }
  var p = {route: pushRoute, compressed: !!m.compressRoute, code: code, flag: body[0], raw: hex(body)};
  try { p.body = decodeBody(pushRoute, m.body); } catch (e) { p.body = {__decode_error: e.message}; }
  for (var i = 0; i < pushWaiters.length; i++) {
    if (pushWaiters[i].pred(p)) { var w = pushWaiters.splice(i, 1)[0]; return w.cb(p); }
  }
  pushes.push(p);
}

function onPackage(pkg) {
  if (heartbeatTimeout) { nextHeartbeatTimeout = Date.now() + heartbeatTimeout; }
  if (pkg.type === Package.TYPE_HEARTBEAT) {
    hbRecv++;
    if (heartbeatTimeoutId) { clearTimeout(heartbeatTimeoutId); heartbeatTimeoutId = null; }
    if (heartbeatInterval && !heartbeatId) {
      heartbeatId = setTimeout(sendHeartbeat, heartbeatInterval);
    }
  } else if (pkg.type === Package.TYPE_DATA) {
    onData(pkg.body);
  } else if (pkg.type === Package.TYPE_KICK) {
    var k = {raw: hex(pkg.body)};
    try { k.body = JSON.parse(Protocol.strdecode(pkg.body)); } catch (e) { k.body = null; k.parse_error = e.message; }
    kicks.push(k);
  } else if (pkg.type !== Package.TYPE_HANDSHAKE) {
    unexpected.push({what: 'package type ' + pkg.type, hex: hex(pkg.body)});
  }
  for (var i = 0; i < packageWaiters.length; i++) {
    if (packageWaiters[i].type === pkg.type) { var w = packageWaiters.splice(i, 1)[0]; w.cb(pkg); break; }
  }
}

function onClose(info) {
  closeInfo = info;
  if (heartbeatId) { clearTimeout(heartbeatId); heartbeatId = null; }
  if (heartbeatTimeoutId) { clearTimeout(heartbeatTimeoutId); heartbeatTimeoutId = null; }
  var ws = closeWaiters; closeWaiters = [];
  ws.forEach(function (cb) { cb(info); });
  if (!expectingClose) {
    finish(new Error('connection closed unexpectedly during step ' + currentStep + ': ' + JSON.stringify(info)));
  }
}
var expectingClose = false;

// ---------------------------------------------------------------------------------------------
// Steps.  Each step records {ok, ...details}; the first failing step ends the run.

function deepEqual(a, b) {
  return util.isDeepStrictEqual(a, b);
}

function step(name, fn) {
  return function (next) {
    currentStep = name;
    var rec = result.steps[name] = {ok: false};
    var called = false;
    function done(err) {
      if (called) { return; }
      called = true;
      if (err) {
        rec.error = err.message || String(err);
        return finish(new Error('step ' + name + ' failed: ' + rec.error));
      }
      rec.ok = true;
      next();
    }
    try { fn(rec, done); } catch (e) { done(e); }
  };
}

function series(fns, done) {
  var i = 0;
  (function next() {
    if (finished) { return; }
    if (i >= fns.length) { return done(); }
    fns[i++](next);
  })();
}

function check(cond, msg) {
  if (!cond) { throw new Error(msg); }
}

// Wraps a callback body so that a thrown check becomes a failed step.
function guard(rec, done, fn) {
  return function () {
    try { fn.apply(null, arguments); } catch (e) { done(e); }
  };
}

var stepConnect = step('connect', function (rec, done) {
  var c = connect(function (err) {
    if (err) { return done(err); }
    done();
  });
  conn = c;
  c.onPackage = onPackage;
  c.onClose = onClose;
});

var stepHandshake = step('handshake', function (rec, done) {
  waitPackage(Package.TYPE_HANDSHAKE, guard(rec, done, function (pkg) {
    var resp = JSON.parse(Protocol.strdecode(pkg.body));
    var sys = resp.sys || {};
    rec.code = resp.code;
    rec.heartbeat = sys.heartbeat;
    rec.dict_size = sys.dict ? Object.keys(sys.dict).length : 0;
    rec.dictVersion = sys.dictVersion;
    rec.protos_version = sys.protos && sys.protos.version;
    check(resp.code === 200, 'handshake code ' + JSON.stringify(resp.code) + ', expected 200');
    check(Number.isInteger(sys.heartbeat) && sys.heartbeat > 0, 'sys.heartbeat is not a positive integer: ' + JSON.stringify(sys.heartbeat));
    check(sys.dict && typeof sys.dict === 'object', 'sys.dict missing');
    check(deepEqual(sys.routeToCode, sys.dict), 'sys.routeToCode differs from sys.dict');
    check(sys.codeToRoute && typeof sys.codeToRoute === 'object', 'sys.codeToRoute missing');
    check(typeof sys.dictVersion === 'string' && sys.dictVersion, 'sys.dictVersion missing');
    check(sys.useDict === true, 'sys.useDict is not true');
    check(sys.useProto === true, 'sys.useProto is not true');
    check(sys.protos && sys.protos.server && sys.protos.client && typeof sys.protos.version === 'string',
      'sys.protos.{server,client,version} incomplete');
    DEMO_ROUTES.forEach(function (r) { check(typeof sys.dict[P + r] === 'number', 'route ' + P + r + ' not in dict'); });
    ['onPush', 'onNotify', 'onBroadcast'].forEach(function (r) { check(typeof sys.dict[r] === 'number', r + ' not in dict'); });
    Object.keys(sys.dict).forEach(function (r) {
      check(sys.codeToRoute[String(sys.dict[r])] === r, 'codeToRoute[' + sys.dict[r] + '] is not ' + r);
    });
    check(sys.protos.client[P + 'proto'] && sys.protos.server[P + 'proto'], 'no protos for ' + P + 'proto');
    heartbeatInterval = sys.heartbeat * 1000;
    heartbeatTimeout = heartbeatInterval * 2;
    dict = sys.dict;
    abbrs = {};
    Object.keys(dict).forEach(function (r) { abbrs[dict[r]] = r; });
    protos = sys.protos;
    protobuf.init({encoderProtos: protos.client, decoderProtos: protos.server});
    browserProtobuf.init({encoderProtos: protos.client, decoderProtos: protos.server});
    done();
  }));
  conn.send(Package.encode(Package.TYPE_HANDSHAKE, Protocol.strencode(JSON.stringify(HANDSHAKE_BODY))));
});

var stepAck = step('ack', function (rec, done) {
  // The JS client's heartbeat loop only starts with the server heartbeat that follows the ACK.
  var t0 = Date.now();
  waitPackage(Package.TYPE_HEARTBEAT, function () {
    rec.first_heartbeat_ms = Date.now() - t0;
    done();
  });
  conn.send(Package.encode(Package.TYPE_HANDSHAKE_ACK));
});

function simpleRequest(name, route, body, expect, extra) {
  return step(name, function (rec, done) {
    var sent = request(route, body, {}, guard(rec, done, function (m) {
      rec.response = m.body;
      check(deepEqual(m.body, expect), 'response ' + JSON.stringify(m.body) + ' (' + m.raw + '), expected ' + JSON.stringify(expect));
      check(m.flag === 0x04, 'response flag 0x' + m.flag.toString(16) + ', expected 0x04');
      if (extra) { return extra(rec, done, m); }
      done();
    }));
    rec.compressed = sent.compressed;
  });
}

var ECHO_BODY = {
  text: 'héllo wörld ☃ 世界 😀',
  nested: {list: [1, -2, 2.5, 'x', null, true, false, {k: 'v', 'ключ': 'значение'}], empty: {}, emptyList: []},
  big: 9007199254740991,
  'clé ✓': 'ok'
};

function transportTag() { return transport + '-' + process.pid; }

var stepEntry = simpleRequest('entry', P + 'entry', {}, {code: 200, msg: 'game server is ok.'});
var stepEcho = simpleRequest('echo', P + 'echo', ECHO_BODY, ECHO_BODY);
var stepBind = simpleRequest('bind', P + 'bind', {uid: 'u-' + transport}, {code: 200, uid: 'u-' + transport});

var stepPush = step('push', function (rec, done) {
  var body = {msg: 'push ☃', n: 1, from: transportTag(), list: [1, 'two', {three: 3}]};
  var got = {};
  function maybe() { if (got.resp && got.push) { done(); } }
  request(P + 'push', body, {}, guard(rec, done, function (m) {
    check(deepEqual(m.body, {code: 200}), 'response ' + JSON.stringify(m.body) + ', expected {"code":200}');
    got.resp = true; maybe();
  }));
  waitPush(function (p) { return p.route === 'onPush'; }, guard(rec, done, function (p) {
    rec.push_compressed = p.compressed;
    rec.push_code = p.code;
    check(deepEqual(p.body, body), 'onPush body ' + JSON.stringify(p.body) + ', expected ' + JSON.stringify(body));
    check(p.compressed && p.code === dict.onPush, 'onPush route not compressed via the dict (' + p.raw + ')');
    check(p.flag === 0x07, 'push flag 0x' + p.flag.toString(16) + ', expected 0x07');
    got.push = true; maybe();
  }));
});

var stepNotify = step('notify', function (rec, done) {
  var body = {note: 'notify ✓', from: transportTag()};
  waitPush(function (p) { return p.route === 'onNotify'; }, guard(rec, done, function (p) {
    rec.push_compressed = p.compressed;
    check(deepEqual(p.body, body), 'onNotify body ' + JSON.stringify(p.body) + ', expected ' + JSON.stringify(body));
    check(p.compressed && p.code === dict.onNotify, 'onNotify route not compressed via the dict (' + p.raw + ')');
    done();
  }));
  rec.compressed = notify(P + 'notify', body).compressed;
});

function protoStep(name, pb, body) {
  return step(name, function (rec, done) {
    var sent = request(P + 'proto', body, {pb: pb}, guard(rec, done, function (m) {
      rec.response = m.body;
      rec.response_hex = m.raw;
      check(!m.body.__decode_error, 'cannot decode the response with protos.server: ' + m.body.__decode_error + ' (' + m.raw + ')');
      check(deepEqual(m.body, body), 'decoded ' + JSON.stringify(m.body) + ' (' + m.raw + '), expected ' + JSON.stringify(body));
      done();
    }));
    callbacks[sent.id].pb = pb;
    rec.request_hex = sent.body_hex;
    rec.compressed = sent.compressed;
  });
}

var stepProto = protoStep('proto', protobuf, {
  id: 42, name: 'pomelo ☃', values: [-1, 0, 1, -64, 64, 2147483647, -2147483648],
  score: 1.5, items: [{kind: 1, label: 'a'}, {kind: 300}]
});
// Same route encoded by the browser build of pomelo-protobuf, which writes varint fields with wire
// type 2 (protocol.md §9.3.3): the server must decode them by the declared type.
var stepProtoBrowser = protoStep('proto_browser', browserProtobuf, {
  id: 7, name: 'browser', values: [-3, 300], score: 0.25, items: [{kind: 2, label: 'b'}]
});

var stepUnknown = step('unknown_route', function (rec, done) {
  var route = P + 'doesNotExist';
  var sent = request(route, {x: 1}, {}, guard(rec, done, function (m) {
    rec.response = m.body;
    check(deepEqual(m.body, {code: 500}), 'response ' + JSON.stringify(m.body) + ' (' + m.raw + '), expected {"code":500}');
    done();
  }));
  rec.compressed = sent.compressed;
});

var stepBroadcast = step('broadcast', function (rec, done) {
  var body = {from: transport, tag: transportTag(), msg: 'broadcast ☃ 世界'};
  var got = {};
  function maybe() { if (got.resp && got.push) { done(); } }
  request(P + 'broadcast', body, {}, guard(rec, done, function (m) {
    check(deepEqual(m.body, {code: 200}), 'response ' + JSON.stringify(m.body) + ', expected {"code":200}');
    got.resp = true; maybe();
  }));
  // Other clients may broadcast at the same time: wait for our own body.
  waitPush(function (p) { return p.route === 'onBroadcast' && p.body && p.body.tag === body.tag; },
    guard(rec, done, function (p) {
      rec.push_compressed = p.compressed;
      check(deepEqual(p.body, body), 'onBroadcast body ' + JSON.stringify(p.body) + ', expected ' + JSON.stringify(body));
      check(p.compressed && p.code === dict.onBroadcast, 'onBroadcast route not compressed via the dict (' + p.raw + ')');
      got.push = true; maybe();
    }));
});

// Every handler route compressed with its dictionary code (as the JS client sends them), and the
// same route uncompressed: both must reach the same handler.
var stepCompressed = step('compressed_routes', function (rec, done) {
  var expect = {code: 200, msg: 'game server is ok.'};
  var a = request(P + 'entry', {}, {compress: true}, guard(rec, done, function (m) {
    check(deepEqual(m.body, expect), 'compressed (code ' + dict[P + 'entry'] + ') entry: ' + JSON.stringify(m.body));
    var b = request(P + 'entry', {}, {compress: false}, guard(rec, done, function (m2) {
      check(deepEqual(m2.body, expect), 'uncompressed entry: ' + JSON.stringify(m2.body));
      var echo = {compressed: 'echo ✓'};
      request(P + 'echo', echo, {compress: true}, guard(rec, done, function (m3) {
        check(deepEqual(m3.body, echo), 'compressed (code ' + dict[P + 'echo'] + ') echo: ' + JSON.stringify(m3.body));
        rec.codes = {entry: dict[P + 'entry'], echo: dict[P + 'echo']};
        done();
      }));
    }));
    check(!b.compressed, 'uncompressed request was compressed');
  }));
  check(a.compressed, 'entry is not in the dict');
});

// The JS client sends its first heartbeat one interval after the server's; the server must answer.
var stepHeartbeat = step('heartbeat', function (rec, done) {
  var t0 = Date.now();
  (function poll() {
    if (hbSent > 0 && hbRecv >= 2) {
      rec.sent = hbSent;
      rec.received = hbRecv;
      rec.waited_ms = Date.now() - t0;
      return done();
    }
    setTimeout(poll, 20);
  })();
});

var stepKick = step('kick', function (rec, done) {
  var body = {uid: 'u-' + transport, reason: 'bye'};
  expectingClose = true;
  request(P + 'kick', body, {}, function (m) { rec.response = m.body; });
  waitPackage(Package.TYPE_KICK, guard(rec, done, function () {
    var k = kicks[kicks.length - 1];
    rec.kick = k.body;
    rec.kick_hex = k.raw;
    check(deepEqual(k.body, {reason: 'bye'}), 'kick body ' + JSON.stringify(k.body) + ' (' + k.raw + '), expected {"reason":"bye"}');
    var t0 = Date.now();
    waitClose(function (info) {
      rec.close = info;
      rec.close_after_kick_ms = Date.now() - t0;
      done();
    });
  }));
  waitClose(guard(rec, done, function (info) {
    check(kicks.length > 0, 'connection closed without a KICK package: ' + JSON.stringify(info));
  }));
});

var stepListen = step('listen', function (rec, done) {
  waitPush(function (p) {
    return p.route === 'onBroadcast' && (!listenFrom || (p.body && p.body.from === listenFrom));
  }, guard(rec, done, function (p) {
    rec.body = p.body;
    rec.push_compressed = p.compressed;
    check(p.compressed && p.code === dict.onBroadcast, 'onBroadcast route not compressed via the dict (' + p.raw + ')');
    done();
  }));
  process.stderr.write('READY\n');
});

var bindListener = simpleRequest('bind', P + 'bind', {uid: 'listen-' + transport}, {code: 200, uid: 'listen-' + transport});

var plan = mode === 'listen'
  ? [stepConnect, stepHandshake, stepAck, bindListener, stepListen]
  : [stepConnect, stepHandshake, stepAck, stepEntry, stepEcho, stepBind, stepPush, stepNotify,
     stepProto, stepProtoBrowser, stepUnknown, stepBroadcast, stepCompressed, stepHeartbeat, stepKick];

series(plan, function () {
  if (unexpected.length) { result.unexpected = unexpected; }
  if (conn && conn.textFrames) { result.steps.connect.text_frames = conn.textFrames; }
  expectingClose = true;
  finish(null);
});
