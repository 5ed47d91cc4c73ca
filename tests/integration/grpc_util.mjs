// Raw-gRPC helpers shared by the integration tests: client metadata and
// protocol messages built with the SDK's own generated classes.
import { require } from './harness.mjs';

const grpc = require('@grpc/grpc-js');
const pb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/service_pb.js');
const defPb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb.js');

export function clientMetadata(clientId = 'it-client-1') {
  const m = new grpc.Metadata();
  m.set('x-mq-client-id', clientId);
  m.set('x-mq-language', 'HTTP');
  m.set('x-mq-protocol', 'v2');
  return m;
}

// A producer's first Telemetry command (Settings for `topic`), serialized.
export function producerSettings(topic = 'TopicTest') {
  const s = new defPb.Settings();
  s.setClientType(defPb.ClientType.PRODUCER);
  const pub = new defPb.Publishing();
  const t = new defPb.Resource();
  t.setName(topic);
  pub.addTopics(t);
  s.setPublishing(pub);
  const cmd = new pb.TelemetryCommand();
  cmd.setSettings(s);
  return Buffer.from(cmd.serializeBinary());
}
