#!/usr/bin/env node
// Wire contract: our apis/apache/rocketmq/v2/*.proto against the protos that
// the official Node.js SDK ships. Both are compiled to descriptor sets with
// protoc and compared element by element. Everything the SDK has must exist
// identically in ours, and ours may have nothing extra in apache.rocketmq.v2.
// The one accepted difference: a proto3 `optional` field in theirs is a field
// alone in a real oneof in ours (same bytes on the wire, same presence).
//
// usage: node wire_contract.js --work DIR --ours DIR --wkt DIR [--protoc PATH]
//                              [--sdk-version V]
'use strict';

const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

function parseArgs(argv) {
  const a = { protoc: 'protoc', sdkVersion: '1.0.8' };
  for (let i = 2; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase());
    if (argv[i + 1] === undefined) throw new Error(`missing value for ${argv[i]}`);
    a[k] = argv[i + 1];
  }
  for (const k of ['work', 'ours', 'wkt'])
    if (!a[k]) throw new Error(`--${k} is required`);
  return a;
}

const args = parseArgs(process.argv);
const PKG = 'apache.rocketmq.v2';
const SDK = 'rocketmq-client-nodejs';
const sdkDir = path.join(args.work, 'sdk');
const sdkPkg = path.join(sdkDir, 'node_modules', SDK);

// 1. The SDK, installed once into a test-local folder.
function installedVersion() {
  try {
    return JSON.parse(fs.readFileSync(path.join(sdkPkg, 'package.json'), 'utf8')).version;
  } catch (e) {
    return null;
  }
}
if (installedVersion() !== args.sdkVersion) {
  fs.mkdirSync(sdkDir, { recursive: true });
  console.log(`contract: installing ${SDK}@${args.sdkVersion} into ${sdkDir}`);
  execFileSync('npm', ['i', '--no-audit', '--no-fund', '--prefix', sdkDir,
    `${SDK}@${args.sdkVersion}`], { stdio: 'inherit' });
  if (installedVersion() !== args.sdkVersion)
    throw new Error(`npm did not install ${SDK}@${args.sdkVersion}`);
}
const descriptorPb = require(path.join(sdkDir, 'node_modules', 'google-protobuf',
  'google', 'protobuf', 'descriptor_pb.js'));
const FDP = descriptorPb.FieldDescriptorProto;

// 2. Both proto trees -> descriptor sets.
function protoFiles(root) {
  const dir = path.join(root, 'apache', 'rocketmq', 'v2');
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.proto')).sort();
  if (files.length === 0) throw new Error(`no .proto files in ${dir}`);
  return files.map((f) => `apache/rocketmq/v2/${f}`);
}
function compile(root, tag) {
  const out = path.join(args.work, `${tag}.desc`);
  try {
    execFileSync(args.protoc, [`-I${root}`, `-I${args.wkt}`, '--include_imports',
      `--descriptor_set_out=${out}`, ...protoFiles(root)], { stdio: 'inherit' });
  } catch (e) {
    console.log(`contract: FAILED: protoc could not compile ${tag} protos under ${root}`);
    process.exit(1);
  }
  return descriptorPb.FileDescriptorSet.deserializeBinary(
    new Uint8Array(fs.readFileSync(out))).getFileList();
}
const theirs = compile(path.join(sdkPkg, 'proto'), 'theirs');
const ours = compile(args.ours, 'ours');

// 3. Index every element of the package by its full name.
function index(files) {
  const ix = { files: new Map(), messages: new Map(), enums: new Map(), services: new Map() };
  for (const f of files) {
    if (f.getPackage() !== PKG) continue;
    ix.files.set(f.getName(), f);
    const walk = (scope, msgs, enums) => {
      for (const e of enums) ix.enums.set(`${scope}.${e.getName()}`, e);
      for (const m of msgs) {
        const name = `${scope}.${m.getName()}`;
        ix.messages.set(name, m);
        walk(name, m.getNestedTypeList(), m.getEnumTypeList());
      }
    };
    walk(`.${PKG}`, f.getMessageTypeList(), f.getEnumTypeList());
    for (const s of f.getServiceList()) ix.services.set(`.${PKG}.${s.getName()}`, s);
  }
  return ix;
}
const T = index(theirs);
const O = index(ours);

const problems = [];
const bad = (msg) => problems.push(msg);
const counts = { services: 0, methods: 0, messages: 0, fields: 0, enumValues: 0 };
const typeName = (t) => Object.keys(FDP.Type).find((k) => FDP.Type[k] === t) || `type ${t}`;
const labelName = (l) => Object.keys(FDP.Label).find((k) => FDP.Label[k] === l) || `label ${l}`;
const byName = (list) => new Map(list.map((x) => [x.getName(), x]));

function extras(kind, mine, ref, where) {
  for (const k of mine.keys()) if (!ref.has(k)) bad(`${where}: extra ${kind} ${k} (not in the SDK)`);
}

// Files: same names, package, imports.
for (const [name, tf] of T.files) {
  const of = O.files.get(name);
  if (!of) { bad(`file ${name}: missing`); continue; }
  const td = [...tf.getDependencyList()].sort().join(', ');
  const od = [...of.getDependencyList()].sort().join(', ');
  if (td !== od) bad(`file ${name}: imports [${od}], SDK has [${td}]`);
  if (of.getSyntax() !== tf.getSyntax())
    bad(`file ${name}: syntax "${of.getSyntax()}", SDK has "${tf.getSyntax()}"`);
}
extras('file', O.files, T.files, 'package ' + PKG);

// Services and methods.
for (const [name, ts] of T.services) {
  counts.services++;
  const os = O.services.get(name);
  if (!os) { bad(`service ${name}: missing`); continue; }
  const om = byName(os.getMethodList());
  for (const tm of ts.getMethodList()) {
    counts.methods++;
    const where = `rpc ${name.slice(1)}/${tm.getName()}`;
    const m = om.get(tm.getName());
    if (!m) { bad(`${where}: missing`); continue; }
    const cmp = [
      ['request type', m.getInputType(), tm.getInputType()],
      ['response type', m.getOutputType(), tm.getOutputType()],
      ['client_streaming', m.getClientStreaming(), tm.getClientStreaming()],
      ['server_streaming', m.getServerStreaming(), tm.getServerStreaming()],
    ];
    for (const [what, o, t] of cmp) if (o !== t) bad(`${where}: ${what} is ${o}, SDK has ${t}`);
  }
  extras('method', om, byName(ts.getMethodList()), `service ${name}`);
}
extras('service', O.services, T.services, 'package ' + PKG);

// Messages and fields.
const isMapEntry = (m) => !!(m.getOptions() && m.getOptions().getMapEntry());
const packed = (f) => (f.getOptions() && f.getOptions().hasPacked()) ? f.getOptions().getPacked() : 'default';
for (const [name, tmsg] of T.messages) {
  counts.messages++;
  const omsg = O.messages.get(name);
  if (!omsg) { bad(`message ${name.slice(1)}: missing`); continue; }
  if (isMapEntry(omsg) !== isMapEntry(tmsg))
    bad(`message ${name.slice(1)}: map_entry is ${isMapEntry(omsg)}, SDK has ${isMapEntry(tmsg)}`);
  const tOneofs = tmsg.getOneofDeclList();
  const oOneofs = omsg.getOneofDeclList();
  const oFields = omsg.getFieldList();
  const oByName = byName(oFields);
  const oByNumber = new Map(oFields.map((f) => [f.getNumber(), f]));
  const members = (fields, idx) => fields.filter((f) => f.hasOneofIndex() && f.getOneofIndex() === idx)
    .map((f) => f.getName()).sort().join(',');
  for (const tf of tmsg.getFieldList()) {
    counts.fields++;
    const where = `field ${name.slice(1)}.${tf.getName()}`;
    const of = oByName.get(tf.getName());
    if (!of) {
      const same = oByNumber.get(tf.getNumber());
      bad(`${where} = ${tf.getNumber()}: missing` + (same ? ` (our number ${tf.getNumber()} is "${same.getName()}")` : ''));
      continue;
    }
    if (of.getNumber() !== tf.getNumber()) bad(`${where}: number ${of.getNumber()}, SDK has ${tf.getNumber()}`);
    if (of.getType() !== tf.getType()) bad(`${where}: type ${typeName(of.getType())}, SDK has ${typeName(tf.getType())}`);
    if (of.getTypeName() !== tf.getTypeName()) bad(`${where}: type_name "${of.getTypeName()}", SDK has "${tf.getTypeName()}"`);
    if (of.getLabel() !== tf.getLabel()) bad(`${where}: label ${labelName(of.getLabel())}, SDK has ${labelName(tf.getLabel())}`);
    if (packed(of) !== packed(tf)) bad(`${where}: packed ${packed(of)}, SDK has ${packed(tf)}`);

    const oIn = of.hasOneofIndex() && !of.getProto3Optional();
    if (tf.getProto3Optional()) {
      // optional in theirs: ours must be optional too, or alone in a real oneof.
      if (of.getProto3Optional()) continue;
      if (!oIn) { bad(`${where}: SDK has it proto3 optional (with presence), ours is a plain field`); continue; }
      const n = oFields.filter((f) => f.hasOneofIndex() && f.getOneofIndex() === of.getOneofIndex()).length;
      if (n !== 1) bad(`${where}: SDK has it proto3 optional, ours is in oneof "${oOneofs[of.getOneofIndex()].getName()}" with ${n} fields (must be alone)`);
    } else if (tf.hasOneofIndex()) {
      // member of a real oneof in theirs: same oneof name, same members.
      const tName = tOneofs[tf.getOneofIndex()].getName();
      if (!oIn) { bad(`${where}: SDK has it in oneof "${tName}", ours is ${of.getProto3Optional() ? 'proto3 optional' : 'a plain field'}`); continue; }
      const oName = oOneofs[of.getOneofIndex()].getName();
      if (oName !== tName) bad(`${where}: in oneof "${oName}", SDK has oneof "${tName}"`);
      const tm = members(tmsg.getFieldList(), tf.getOneofIndex());
      const om = members(oFields, of.getOneofIndex());
      if (tm !== om) bad(`${where}: oneof "${oName}" holds {${om}}, SDK's holds {${tm}}`);
    } else if (oIn || of.getProto3Optional()) {
      bad(`${where}: plain field in the SDK, ours has presence (${oIn ? `oneof "${oOneofs[of.getOneofIndex()].getName()}"` : 'optional'})`);
    }
  }
  extras('field', oByName, byName(tmsg.getFieldList()), `message ${name.slice(1)}`);
}
extras('message', O.messages, T.messages, 'package ' + PKG);

// Enums and values.
for (const [name, te] of T.enums) {
  const oe = O.enums.get(name);
  if (!oe) { bad(`enum ${name.slice(1)}: missing`); counts.enumValues += te.getValueList().length; continue; }
  const ov = byName(oe.getValueList());
  for (const tv of te.getValueList()) {
    counts.enumValues++;
    const v = ov.get(tv.getName());
    if (!v) bad(`enum ${name.slice(1)}: value ${tv.getName()} = ${tv.getNumber()} missing`);
    else if (v.getNumber() !== tv.getNumber())
      bad(`enum ${name.slice(1)}: ${tv.getName()} = ${v.getNumber()}, SDK has ${tv.getNumber()}`);
  }
  extras('value', ov, byName(te.getValueList()), `enum ${name.slice(1)}`);
}
extras('enum', O.enums, T.enums, 'package ' + PKG);

for (const p of problems) console.log(`MISMATCH ${p}`);
console.log(`contract: ${counts.services} services, ${counts.methods} methods, ` +
  `${counts.messages} messages, ${counts.fields} fields, ${counts.enumValues} enum values checked ` +
  `against ${SDK}@${args.sdkVersion}; ${problems.length} mismatches`);
process.exit(problems.length === 0 ? 0 : 1);
