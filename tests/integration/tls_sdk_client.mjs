// Child process of tls.test.mjs: the official Node.js SDK with sslEnabled
// against a gantry, run in its own node so that the environment can carry
// the test's CA: SDK 1.0.8 builds its channel with
// grpc.credentials.createSsl() and no arguments, which in grpc-js 1.14
// trusts GRPC_DEFAULT_SSL_ROOTS_FILE_PATH when set (read once, at load)
// and node's built-in roots otherwise -- NODE_EXTRA_CA_CERTS is not enough
// (the handshake fails "unable to verify the first certificate").  The
// server's name is checked against the certificate (IP SAN here).
// argv: endpoint topic group.  Prints one JSON line
// {sent, received: [messageId...], body} or {error}.
import { startProducer, startSimpleConsumer, shutdownQuietly, receiveAll } from './sdk_util.mjs';

const [endpoint, topic, group] = process.argv.slice(2);
const g = { endpoint };
let producer;
let consumer;
try {
  producer = await startProducer(g, [topic], { sslEnabled: true });
  consumer = await startSimpleConsumer(g, group, topic, { sslEnabled: true });
  const r = await producer.send({ topic, body: Buffer.from('over tls'), tag: 'tls' });
  const got = await receiveAll(consumer, 1, 15000);
  console.log(JSON.stringify({
    sent: r.messageId, received: got.map((m) => m.messageId),
    body: got.length > 0 ? got[0].body.toString() : null,
  }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.message ? e.message : e) }));
} finally {
  await shutdownQuietly(producer, consumer);
}
process.exit(0);
