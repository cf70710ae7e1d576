/*
 * In-page test for tests/browser/index.html: drives the official Pomelo browser client
 * (pomelo-jsclient-websocket, as built into the npm pomelo 2.2.7 template web-server's
 * js/lib/build/build.js and loaded by index.html with `require('boot')`) against a Pomelo
 * connector serving the demo app (see the demo's ROUTES.md), one step per route.
 *
 * Query string: host, port (the connector), uid (optional, for bind and kick).
 * Results go to window.__results ({done, ok, steps: [{name, ok, ms, detail, error}], ...}) and to
 * the DOM. run.js waits for window.__results.done.
 *
 * Only the public API of the client is used: pomelo.init, pomelo.request, pomelo.notify,
 * pomelo.on. A thin wrapper around window.WebSocket records the packages on the wire (it changes
 * nothing), so the test can also check what went over the socket: the handshake answer, that the
 * proto route really travels as protobuf both ways, the heartbeats and the kick package.
 */
(function () {
  'use strict';

  var params = new URLSearchParams(window.location.search);
  var HOST = params.get('host') || '127.0.0.1';
  var PORT = params.get('port') || '3010';
  var UID = params.get('uid') || 'browser-' + Date.now();
  var STEP_TIMEOUT = 5000;
  var ROUTE = 'connector.entryHandler.';

  var results = window.__results = {
    done: false,
    ok: false,
    target: HOST + ':' + PORT,
    userAgent: navigator.userAgent,
    steps: [],
    events: [],
    pageErrors: []
  };

  window.addEventListener('error', function (e) {
    results.pageErrors.push(String(e.message || e));
  });
  window.addEventListener('unhandledrejection', function (e) {
    results.pageErrors.push('unhandled rejection: ' + String(e.reason && e.reason.stack || e.reason));
  });

  // --- wire tap ---------------------------------------------------------------------------------
  // Every package sent and received, decoded with the client's own window.Protocol.
  var wire = [];
  var NativeWebSocket = window.WebSocket;

  function describePackage(dir, data) {
    var bytes = new Uint8Array(data);
    var pkg = Protocol.Package.decode(bytes);
    var entry = {dir: dir, type: pkg.type, at: Date.now()};
    if (pkg.type === Protocol.Package.TYPE_DATA && pkg.body) {
      var msg = Protocol.Message.decode(pkg.body);
      entry.msgType = msg.type;
      entry.id = msg.id;
      entry.route = msg.route;
      entry.compressRoute = msg.compressRoute;
      entry.body = msg.body;
    } else if (pkg.body) {
      try {
        entry.json = JSON.parse(Protocol.strdecode(pkg.body));
      } catch (e) {
        entry.raw = Array.prototype.slice.call(pkg.body, 0, 64);
      }
    }
    return entry;
  }

  // The types of the packages in one WebSocket message. This client decodes only the first
  // package of a message (Package.decode reads one header) and drops the rest.
  var packedMessages = [];
  function packageTypes(data) {
    var bytes = new Uint8Array(data);
    var types = [];
    for (var offset = 0; offset + 4 <= bytes.length;) {
      types.push(bytes[offset]);
      offset += 4 + ((bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) | bytes[offset + 3]);
    }
    return types;
  }

  function TappedWebSocket(url, protocols) {
    var ws = protocols === undefined ? new NativeWebSocket(url) : new NativeWebSocket(url, protocols);
    var send = ws.send;
    ws.send = function (data) {
      try { wire.push(describePackage('out', data)); } catch (e) { results.pageErrors.push('tap out: ' + e); }
      return send.call(ws, data);
    };
    ws.addEventListener('message', function (event) {
      try {
        wire.push(describePackage('in', event.data));
        var types = packageTypes(event.data);
        if (types.length !== 1) packedMessages.push({types: types, bytes: event.data.byteLength});
      } catch (e) { results.pageErrors.push('tap in: ' + e); }
    });
    ws.addEventListener('close', function (event) {
      wire.push({dir: 'close', code: event.code, reason: event.reason, wasClean: event.wasClean, at: Date.now()});
    });
    return ws;
  }
  TappedWebSocket.prototype = NativeWebSocket.prototype;
  ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED'].forEach(function (k) { TappedWebSocket[k] = NativeWebSocket[k]; });
  window.WebSocket = TappedWebSocket;

  function countType(dir, type) {
    return wire.filter(function (p) { return p.dir === dir && p.type === type; }).length;
  }
  function isJsonBytes(bytes) {
    try { JSON.parse(Protocol.strdecode(bytes)); return true; } catch (e) { return false; }
  }

  // --- helpers ----------------------------------------------------------------------------------
  function canonical(v) {
    if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
    if (v && typeof v === 'object') {
      return '{' + Object.keys(v).sort().map(function (k) {
        return JSON.stringify(k) + ':' + canonical(v[k]);
      }).join(',') + '}';
    }
    return JSON.stringify(v);
  }
  function assertEqual(actual, expected, what) {
    if (canonical(actual) !== canonical(expected)) {
      throw new Error(what + ': expected ' + canonical(expected) + ', got ' + canonical(actual));
    }
  }
  function assert(cond, what) {
    if (!cond) throw new Error(what);
  }
  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }
  function withTimeout(promise, what, ms) {
    ms = ms || STEP_TIMEOUT;
    return new Promise(function (resolve, reject) {
      var t = setTimeout(function () { reject(new Error('timed out after ' + ms + ' ms waiting for ' + what)); }, ms);
      promise.then(function (v) { clearTimeout(t); resolve(v); }, function (e) { clearTimeout(t); reject(e); });
    });
  }
  function request(route, msg) {
    return withTimeout(new Promise(function (resolve) {
      pomelo.request(route, msg, resolve);
    }), 'the response to ' + route);
  }
  // Resolves with the body of the next `event` the client emits.
  function nextEvent(event) {
    return withTimeout(new Promise(function (resolve) {
      pomelo.once(event, function (body) { resolve(body); });
    }), "pomelo.on('" + event + "')");
  }

  // Client events, as a user of the client would see them.
  ['onPush', 'onNotify', 'onBroadcast', 'onKick', 'close', 'disconnect', 'io-error', 'error',
   'heartbeat timeout'].forEach(function (name) {
    pomelo.on(name, function (arg) {
      var shown = arg && arg.type && arg.target ? {eventType: arg.type, code: arg.code} : arg;
      results.events.push({event: name, arg: shown === undefined ? null : shown, at: Date.now()});
    });
  });

  // --- DOM --------------------------------------------------------------------------------------
  function render() {
    var list = document.getElementById('steps');
    list.innerHTML = '';
    results.steps.forEach(function (s) {
      var li = document.createElement('li');
      li.className = s.ok ? 'pass' : 'fail';
      li.textContent = (s.ok ? 'PASS ' : 'FAIL ') + s.name + ' (' + s.ms + ' ms)' + (s.error ? ': ' + s.error : '');
      if (s.detail !== undefined) {
        var pre = document.createElement('pre');
        pre.textContent = JSON.stringify(s.detail);
        li.appendChild(pre);
      }
      list.appendChild(li);
    });
    var summary = document.getElementById('summary');
    if (results.done) {
      var failed = results.steps.filter(function (s) { return !s.ok; }).length;
      summary.className = results.ok ? 'pass' : 'fail';
      summary.textContent = (results.ok ? 'PASSED' : 'FAILED') + ': ' + (results.steps.length - failed) +
        ' passed, ' + failed + ' failed, against ' + results.target;
    } else {
      summary.textContent = 'running against ' + results.target + '...';
    }
  }

  // --- steps ------------------------------------------------------------------------------------
  async function step(name, fn) {
    var started = Date.now();
    var record = {name: name, ok: false, ms: 0};
    results.steps.push(record);
    render();
    try {
      var detail = await fn();
      if (detail !== undefined) record.detail = detail;
      record.ok = true;
    } catch (e) {
      record.error = String(e && e.message || e);
    }
    record.ms = Date.now() - started;
    render();
    return record.ok;
  }

  var initAt = 0;
  var heartbeatSeconds = 0;

  async function run() {
    // init: WebSocket, handshake, handshake ACK; the callback fires after the client's ACK.
    var inited = await step('init', async function () {
      await withTimeout(new Promise(function (resolve, reject) {
        var fail = function () { reject(new Error('the socket closed before the handshake finished')); };
        pomelo.once('close', fail);
        pomelo.init({host: HOST, port: PORT, log: true}, function () {
          pomelo.off('close', fail);
          resolve();
        });
      }), 'the pomelo.init callback (handshake)');
      initAt = Date.now();
      var hs = wire.filter(function (p) { return p.dir === 'in' && p.type === Protocol.Package.TYPE_HANDSHAKE; })[0];
      assert(hs && hs.json, 'no handshake answer on the wire');
      assertEqual(hs.json.code, 200, 'handshake code');
      var sys = hs.json.sys || {};
      heartbeatSeconds = sys.heartbeat || 0;
      assert(sys.dict && sys.dict[ROUTE + 'entry'], 'handshake has no route dictionary');
      assert(sys.protos && sys.protos.server && sys.protos.server[ROUTE + 'proto'], 'handshake has no server protos for the proto route');
      assert(sys.protos.client && sys.protos.client[ROUTE + 'proto'], 'handshake has no client protos for the proto route');
      assert(pomelo.data && pomelo.data.protos, 'the client did not take the protos');
      return {heartbeat: sys.heartbeat, dictSize: Object.keys(sys.dict).length, protosVersion: sys.protos.version,
              ackSent: countType('out', Protocol.Package.TYPE_HANDSHAKE_ACK)};
    });
    if (!inited) return;

    // entry, called exactly as the template's index.html does (a string body).
    await step('entry', async function () {
      var res = await request(ROUTE + 'entry', 'hello pomelo');
      assertEqual(res, {code: 200, msg: 'game server is ok.'}, 'entry response');
      return res;
    });

    await step('echo', async function () {
      var body = {text: 'h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c', n: 42, f: 1.25, neg: -7, big: 1234567890123,
                  arr: [1, 'two', null, true, false], nested: {a: {b: [], c: {}}}, empty: ''};
      var res = await request(ROUTE + 'echo', body);
      assertEqual(res, body, 'echo response');
      var sent = wire.filter(function (p) { return p.dir === 'out' && p.msgType === 0 && p.route === ROUTE + 'echo'; });
      return {routeSentCompressed: sent.length ? !!sent[0].compressRoute : null};
    });

    await step('bind', async function () {
      var res = await request(ROUTE + 'bind', {uid: UID});
      assertEqual(res, {code: 200, uid: UID}, 'bind response');
      return res;
    });

    await step('push -> onPush', async function () {
      var body = {msg: 'pushed \u00e0 moi', seq: 1};
      var pushed = nextEvent('onPush');
      var res = await request(ROUTE + 'push', body);
      assertEqual(res, {code: 200}, 'push response');
      assertEqual(await pushed, body, 'onPush body');
      var p = wire.filter(function (e) { return e.dir === 'in' && e.msgType === 3; }).pop();
      return {pushRouteCompressed: p ? !!p.compressRoute : null};
    });

    await step('notify -> onNotify', async function () {
      var body = {msg: 'notified', seq: 2};
      var notified = nextEvent('onNotify');
      pomelo.notify(ROUTE + 'notify', body);
      assertEqual(await notified, body, 'onNotify body');
    });

    await step('broadcast -> onBroadcast', async function () {
      var body = {msg: 'to everyone', from: UID};
      var broadcast = nextEvent('onBroadcast');
      var res = await request(ROUTE + 'broadcast', body);
      assertEqual(res, {code: 200}, 'broadcast response');
      assertEqual(await broadcast, body, 'onBroadcast body');
    });

    await step('proto (protobuf both ways)', async function () {
      var body = {id: 7, name: 'prot\u00f6 \u65e5', values: [-1, 0, 1, 300, -70000, 2147483647],
                  score: 1.5, items: [{kind: 1, label: 'one'}, {kind: 2}]};
      var res = await request(ROUTE + 'proto', body);
      assertEqual(res, body, 'proto response (decoded by the client with protos.server)');
      var out = wire.filter(function (p) { return p.dir === 'out' && p.msgType === 0 && p.route === ROUTE + 'proto'; }).pop();
      assert(out, 'the proto request is not on the wire');
      var back = wire.filter(function (p) { return p.dir === 'in' && p.msgType === 2 && p.id === out.id; }).pop();
      assert(back, 'the proto response is not on the wire');
      assert(!isJsonBytes(out.body), 'the request went as JSON, not protobuf');
      assert(!isJsonBytes(back.body), 'the response came as JSON, not protobuf');
      return {requestBytes: out.body.length, responseBytes: back.body.length};
    });

    await step('unknown route -> code 500', async function () {
      var res = await request(ROUTE + 'noSuchRoute', {x: 1});
      assertEqual(res && res.code, 500, 'response code');
      return res;
    });

    // Heartbeats: the client starts its loop only on the server's heartbeat after the ACK, and the
    // server drops a client that is silent for twice the interval: stay past that, then check
    // heartbeats went both ways and the link still answers.
    await step('heartbeat (connection kept past 2 x interval)', async function () {
      assert(heartbeatSeconds > 0, 'the handshake set no heartbeat');
      var until = initAt + (2 * heartbeatSeconds + 1) * 1000;
      await sleep(Math.max(0, until - Date.now()));
      var hb = {inbound: countType('in', Protocol.Package.TYPE_HEARTBEAT),
                outbound: countType('out', Protocol.Package.TYPE_HEARTBEAT)};
      assert(hb.inbound >= 1, 'the server sent no heartbeat');
      assert(hb.outbound >= 1, 'the client sent no heartbeat (it starts only on a server heartbeat)');
      assert(!wire.some(function (p) { return p.dir === 'close'; }), 'the socket closed during the wait');
      var res = await request(ROUTE + 'entry', {});
      assertEqual(res, {code: 200, msg: 'game server is ok.'}, 'entry response after the wait');
      return hb;
    });

    // Kick itself by uid: a kick package (onKick; this build passes no reason), then the close.
    await step('kick -> onKick, close', async function () {
      var kicked = nextEvent('onKick');
      var closed = nextEvent('close');
      var kickResponse = null;
      pomelo.request(ROUTE + 'kick', {uid: UID, reason: 'bye from the browser test'}, function (res) {
        kickResponse = res;
      });
      await kicked;
      var kickedAt = Date.now();
      await closed;
      var kick = wire.filter(function (p) { return p.dir === 'in' && p.type === Protocol.Package.TYPE_KICK; })[0];
      assert(kick, 'no kick package on the wire');
      assertEqual(kick.json, {reason: 'bye from the browser test'}, 'kick package body');
      var close = wire.filter(function (p) { return p.dir === 'close'; })[0];
      var names = results.events.map(function (e) { return e.event; });
      assert(names.indexOf('onKick') < names.indexOf('close'), 'close came before onKick');
      return {kickResponse: kickResponse, closeCode: close && close.code, wasClean: close && close.wasClean,
              closeAfterKickMs: Date.now() - kickedAt};
    });
  }

  // Checked last, so that it covers the whole session: the server must send one package per
  // WebSocket message, as Pomelo does; the rest of a message is lost on this client.
  async function checkFraming() {
    if (!initAt) return;
    await step('one package per WebSocket message', async function () {
      if (packedMessages.length) {
        throw new Error(packedMessages.length + ' message(s) held more than one package, which this client ' +
          'drops after the first; package types per message: ' +
          packedMessages.map(function (m) { return '[' + m.types.join(',') + ']'; }).join(' '));
      }
      return {messagesIn: wire.filter(function (p) { return p.dir === 'in'; }).length};
    });
  }

  function finish() {
    // Let any late event land before summing up.
    setTimeout(function () {
      results.wire = wire.map(function (p) {
        var o = {dir: p.dir, type: p.type};
        if (p.msgType !== undefined) { o.msgType = p.msgType; o.id = p.id; o.route = p.route; o.bytes = p.body ? p.body.length : 0; }
        if (p.json !== undefined) o.json = p.type === 1 ? '(handshake)' : p.json;
        if (p.code !== undefined) o.code = p.code;
        return o;
      });
      results.ok = results.steps.length > 0 && results.steps.every(function (s) { return s.ok; }) &&
        results.pageErrors.length === 0;
      results.done = true;
      render();
    }, 100);
  }

  if (!window.pomelo || typeof pomelo.init !== 'function' || !window.Protocol || !window.protobuf) {
    results.pageErrors.push('the Pomelo client did not load (window.pomelo/Protocol/protobuf missing)');
    finish();
    return;
  }
  run().then(checkFraming).then(finish, function (e) {
    results.pageErrors.push('run: ' + String(e && e.stack || e));
    finish();
  });
})();
