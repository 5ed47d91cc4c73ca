// Preloaded into the amqplib suite's mocha process (mocha --require).
// Three of the suite's tests connect to the default port whatever URL
// says ("serverProperties", "using custom heartbeat option": the URL's
// query only; "ipv6": amqp://[::1]).  When AMQPLIB_SUITE_PORT is set, a
// connection to port 5672 on a loopback host goes to that port instead,
// so the suite runs against a server on any port; the tests' logic is
// unchanged.
'use strict';
const net = require('net');

const port = Number(process.env.AMQPLIB_SUITE_PORT);
const loopback = new Set([undefined, 'localhost', '127.0.0.1', '::1', '[::1]']);

if (port > 0 && port !== 5672) {
  const redirect = (args) => {
    const o = args[0];
    if (o !== null && typeof o === 'object' && Number(o.port) === 5672 && loopback.has(o.host)) {
      args[0] = { ...o, port };
    } else if ((typeof o === 'number' || typeof o === 'string') && Number(o) === 5672 &&
               (typeof args[1] !== 'string' || loopback.has(args[1]))) {
      args[0] = port;
    }
    return args;
  };
  const connect = net.connect;
  net.connect = net.createConnection = function (...args) {
    return connect.apply(this, redirect(args));
  };
}
