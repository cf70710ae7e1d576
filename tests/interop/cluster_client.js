#!/usr/bin/env node
// Cluster client for tests/ops/test_cluster_e2e.py: several Pomelo clients in one Node process,
// built like client.js on the official libraries (pomelo-protocol, pomelo-protobuf, ws), each
// connected to one connector of a cluster, acting on one server through them:
//
//   1. client i connects to ENDPOINTS[i % n], handshakes (route dict, protos), ACKs, and binds
//      uid PREFIX + i through the demo's connector.entryHandler.bind;
//   2. every client asks connector.entryHandler.broadcast for {from: i}: every client must get
//      every broadcast exactly once, whichever connector it is on;
//   3. client 0 kicks every other uid (connector.entryHandler.kick, reason "cluster"): each of
//      those clients must get a KICK {reason: "cluster"} and be closed.
//
// usage: node cluster_client.js PREFIX COUNT host:port:tcp|ws [host:port:tcp|ws ...]
// Prints ONE line of JSON {"ok":..., "steps":{...}, "error":...} and exits 0 only if all passed.
// Hard timeout: 20 s (INTEROP_TIMEOUT_MS overrides it).
'use strict';

var net = require('net');
var WebSocket = require('ws');
var Protocol = require('pomelo-protocol');
var protobuf = require('pomelo-protobuf');

var Package = Protocol.Package;
var Message = Protocol.Message;
var P = 'connector.entryHandler.';
var HANDSHAKE_BODY = {sys: {type: 'js-websocket', version: '0.0.1', rsa: {}, protoVersion: 0}, user: {}};

var argv = process.argv.slice(2);
var prefix = argv[0];
var count = parseInt(argv[1], 10);
var endpoints = argv.slice(2).map(function (e) {
  var parts = e.split(':');
  return {host: parts[0], port: parseInt(parts[1], 10), transport: parts[2]};
});
var result = {ok: false, steps: {}, error: null};
var finished = false;
var clients = [];

function finish(err) {
  if (finished) { return; }
  finished = true;
  result.error = err ? (err.message || String(err)) : null;
  result.ok = !err;
  clients.forEach(function (c) { try { c.close(); } catch (e) { /* ignore */ } });
  process.stdout.write(JSON.stringify(result) + '\n', function () { process.exit(result.ok ? 0 : 1); });
}

if (!prefix || !(count > 0) || !endpoints.length ||
    endpoints.some(function (e) { return !e.port || (e.transport !== 'tcp' && e.transport !== 'ws'); })) {
  result.error = 'usage: node cluster_client.js PREFIX COUNT host:port:tcp|ws ...';
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(2);
}
setTimeout(function () { finish(new Error('hard timeout')); },
  parseInt(process.env.INTEROP_TIMEOUT_MS || '20000', 10));
process.on('uncaughtException', finish);

// One Pomelo client: the JS client's behaviour (dict, protos, heartbeats) on TCP or WebSocket.
function Client(index, endpoint) {
  this.index = index;
  this.endpoint = endpoint;
  this.uid = prefix + index;
  this.dict = {};
  this.abbrs = {};
  this.protos = {client: {}, server: {}};
  this.reqId = 0;
  this.callbacks = {};
  this.pushes = [];
  this.kicks = [];
  this.closed = false;
  this.onChange = function () {};
  this.heartbeat = 0;
  this.hbTimer = null;
}

Client.prototype.connect = function (cb) {
  var self = this;
  var e = this.endpoint;
  function packages(decoded) {
    (Array.isArray(decoded) ? decoded : [decoded]).forEach(function (p) { self.onPackage(p); });
  }
  function closed() {
    self.closed = true;
    if (self.hbTimer) { clearTimeout(self.hbTimer); }
    self.onChange();
  }
  this.handshakeDone = cb;
  if (e.transport === 'tcp') {
    var sock = net.connect({host: e.host, port: e.port});
    var pending = Buffer.alloc(0);
    sock.setNoDelay(true);
    sock.on('connect', function () { self.sendHandshake(); });
    sock.on('data', function (data) {
      pending = Buffer.concat([pending, data]);
      while (pending.length >= 4) {
        var len = (pending[1] << 16) | (pending[2] << 8) | pending[3];
        if (pending.length < 4 + len) { break; }
        var one = pending.subarray(0, 4 + len);
        pending = pending.subarray(4 + len);
        packages(Package.decode(one));
      }
    });
    sock.on('error', function (err) { self.error = err.message; });
    sock.on('close', closed);
    this.send = function (bytes) { sock.write(Buffer.from(bytes)); };
    this.close = function () { sock.destroy(); };
  } else {
    var ws = new WebSocket('ws://' + e.host + ':' + e.port);
    ws.binaryType = 'arraybuffer';
    ws.on('open', function () { self.sendHandshake(); });
    ws.on('message', function (data) { packages(Package.decode(Buffer.from(data))); });
    ws.on('error', function (err) { self.error = err.message; });
    ws.on('close', closed);
    this.send = function (bytes) { ws.send(Buffer.from(bytes), {binary: true}); };
    this.close = function () { try { ws.terminate(); } catch (err) { /* ignore */ } };
  }
};

Client.prototype.sendHandshake = function () {
  this.send(Package.encode(Package.TYPE_HANDSHAKE, Protocol.strencode(JSON.stringify(HANDSHAKE_BODY))));
};

Client.prototype.onPackage = function (pkg) {
  var self = this;
  if (pkg.type === Package.TYPE_HANDSHAKE) {
    var resp = JSON.parse(Protocol.strdecode(pkg.body));
    if (resp.code !== 200) { return finish(new Error('client ' + this.index + ': handshake code ' + resp.code)); }
    var sys = resp.sys;
    this.heartbeat = sys.heartbeat * 1000;
    this.dict = sys.dict || {};
    Object.keys(this.dict).forEach(function (r) { self.abbrs[self.dict[r]] = r; });
    this.protos = sys.protos || this.protos;
    protobuf.init({encoderProtos: this.protos.client, decoderProtos: this.protos.server});
    this.send(Package.encode(Package.TYPE_HANDSHAKE_ACK));
    var done = this.handshakeDone;
    this.handshakeDone = null;
    if (done) { done(); }
  } else if (pkg.type === Package.TYPE_HEARTBEAT) {
    if (this.heartbeat && !this.hbTimer) {
      this.hbTimer = setTimeout(function () {
        self.hbTimer = null;
        if (!self.closed) { self.send(Package.encode(Package.TYPE_HEARTBEAT)); }
      }, this.heartbeat);
    }
  } else if (pkg.type === Package.TYPE_DATA) {
    var m = Message.decode(pkg.body);
    var route = m.compressRoute ? this.abbrs[m.route] : m.route;
    if (m.id > 0) {
      var cb = this.callbacks[m.id];
      delete this.callbacks[m.id];
      if (cb) { cb.fn(this.decode(cb.route, m.body)); }
    } else {
      this.pushes.push({route: route, body: this.decode(route, m.body)});
    }
  } else if (pkg.type === Package.TYPE_KICK) {
    this.kicks.push(JSON.parse(Protocol.strdecode(pkg.body)));
  }
  this.onChange();
};

Client.prototype.decode = function (route, bytes) {
  if (this.protos.server[route]) { return protobuf.decode(route, Buffer.from(bytes)); }
  return JSON.parse(Protocol.strdecode(Buffer.from(bytes)));
};

Client.prototype.request = function (route, body, cb) {
  var id = ++this.reqId;
  var payload = this.protos.client[route] ? protobuf.encode(route, body)
    : Protocol.strencode(JSON.stringify(body));
  var compress = !!this.dict[route];
  this.callbacks[id] = {route: route, fn: cb};
  this.send(Package.encode(Package.TYPE_DATA,
    Message.encode(id, Message.TYPE_REQUEST, compress ? 1 : 0, compress ? this.dict[route] : route, payload)));
};

// Wait until pred() holds, re-checking whenever any client gets something.
function until(pred, cb) {
  if (pred()) { return cb(); }
  var check = function () {
    if (pred()) {
      clients.forEach(function (c) { c.onChange = function () {}; });
      cb();
    }
  };
  clients.forEach(function (c) { c.onChange = check; });
}

function series(items, fn, cb) {
  var i = 0;
  (function next() {
    if (i >= items.length) { return cb(); }
    fn(items[i++], next);
  })();
}

for (var i = 0; i < count; i++) { clients.push(new Client(i, endpoints[i % endpoints.length])); }

series(clients, function (c, next) { c.connect(next); }, function () {
  series(clients, function (c, next) {
    c.request(P + 'bind', {uid: c.uid}, function (resp) {
      if (resp.code !== 200) { return finish(new Error(c.uid + ': bind answered ' + JSON.stringify(resp))); }
      next();
    });
  }, function () {
    result.steps.bind = {ok: true, count: count};
    series(clients, function (c, next) {
      c.request(P + 'broadcast', {from: c.index}, function (resp) {
        if (resp.code !== 200) { return finish(new Error(c.uid + ': broadcast answered ' + JSON.stringify(resp))); }
        next();
      });
    }, function () {
      until(function () {
        return clients.every(function (c) { return c.pushes.length >= count; });
      }, function () {
        var bad = clients.filter(function (c) {
          var froms = c.pushes.map(function (p) { return p.route === 'onBroadcast' ? p.body.from : -1; });
          froms.sort(function (a, b) { return a - b; });
          return froms.length !== count || froms.some(function (f, k) { return f !== k; });
        });
        if (bad.length) {
          return finish(new Error('broadcasts: ' + JSON.stringify(bad.map(function (c) { return c.pushes; }))));
        }
        result.steps.broadcast = {ok: true, each_got: count};
        var kicker = clients[0];
        var others = clients.slice(1);
        series(others, function (c, next) {
          kicker.request(P + 'kick', {uid: c.uid, reason: 'cluster'}, function (resp) {
            if (resp.code !== 200) { return finish(new Error('kick ' + c.uid + ' answered ' + JSON.stringify(resp))); }
            next();
          });
        }, function () {
          until(function () {
            return others.every(function (c) { return c.closed; });
          }, function () {
            var bad = others.filter(function (c) {
              return c.kicks.length !== 1 || c.kicks[0].reason !== 'cluster';
            });
            if (bad.length) { return finish(new Error('kicks: ' + JSON.stringify(bad.map(function (c) { return c.kicks; })))); }
            if (kicker.closed) { return finish(new Error('the kicker was closed')); }
            result.steps.kick = {ok: true, kicked: others.length};
            finish(null);
          });
        });
      });
    });
  });
});
