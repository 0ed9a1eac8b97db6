'use strict';
// Drives the Azure IoT SDK for Node against the emulator. Usage: node run.js '<json>'.
// Prints one JSON line: {"ok":true,...} or {"ok":false,"name":...,"message":...}.
const ProvisioningHttp = require('azure-iot-provisioning-device-http').Http;
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');
const { Client, Message } = require('azure-iot-device');
const DeviceHttp = require('azure-iot-device-http').Http;
const { Registry } = require('azure-iothub');
const { NoRetry } = require('azure-iot-common');

function fail(e) {
  return {
    ok: false, name: e && (e.name || (e.constructor && e.constructor.name)), message: String(e && e.message),
    statusCode: e && e.response && e.response.statusCode,
    responseBody: e && e.responseBody, result: e && e.result,
  };
}

async function register(cmd) {
  let security;
  if (cmd.cert) {
    security = new X509Security(cmd.regId, { cert: cmd.cert, key: cmd.key });
  } else {
    security = new SymmetricKeySecurityClient(cmd.tokenRegId || cmd.regId, cmd.key);
    if (cmd.tokenRegId) {
      // A security client whose token names another registration than the request path.
      const inner = security;
      security = {
        getRegistrationId: (cb) => cb(null, cmd.regId),
        createSharedAccessSignature: (scope, cb) => inner.createSharedAccessSignature(scope, cb),
      };
    }
  }
  const client = ProvisioningDeviceClient.create(cmd.host, cmd.scope, new ProvisioningHttp(), security);
  if (cmd.payload) client.setProvisioningPayload(cmd.payload);
  const state = await client.register();
  return { ok: true, state };
}

async function sendEvent(cmd) {
  let client;
  if (cmd.cert) {
    client = Client.fromConnectionString(`HostName=${cmd.host};DeviceId=${cmd.deviceId};x509=true`, DeviceHttp);
    // Not awaited: the HTTP transport applies cert options synchronously but never calls
    // back for options without receiver settings (azure-iot-device-http 1.14.4).
    client.setOptions({ cert: cmd.cert, key: cmd.key }).catch(() => {});
  } else if (cmd.sas) {
    client = Client.fromSharedAccessSignature(cmd.sas, DeviceHttp);
  } else {
    client = Client.fromConnectionString(`HostName=${cmd.host};DeviceId=${cmd.deviceId};SharedAccessKey=${cmd.key}`, DeviceHttp);
  }
  if (cmd.noRetry) {
    // The default policy keeps retrying a 401 for about 90 s.
    client.setRetryPolicy(new NoRetry());
  }
  const msg = new Message('hello from node');
  msg.properties.add('k', 'v');
  await client.sendEvent(msg);
  await client.close();
  return { ok: true };
}

function step(p) {
  return p.then((r) => ({ ok: true, r: r && r.responseBody !== undefined ? r.responseBody : r }), (e) => fail(e));
}

async function registry(cmd) {
  const reg = Registry.fromConnectionString(`HostName=${cmd.host};SharedAccessKeyName=iothubowner;SharedAccessKey=${cmd.policyKey}`);
  const out = {};
  const dev = cmd.deviceId;
  if (cmd.mode === 'list') {
    out.list = await step(reg.getModulesOnDevice(dev));
    return { ok: true, steps: out };
  }
  out.create = await step(reg.create({ deviceId: dev }));
  out.createAgain = await step(reg.create({ deviceId: dev }));
  out.get = await step(reg.get(dev));
  out.addM1 = await step(reg.addModule({ deviceId: dev, moduleId: 'm1' }));
  out.addM2 = await step(reg.addModule({ deviceId: dev, moduleId: 'm2' }));
  out.list = await step(reg.getModulesOnDevice(dev));
  const m1 = out.addM1.r;
  out.update = await step(reg.updateModule(Object.assign({}, m1, { managedBy: 'node' }), false));
  out.stale = await step(reg.updateModule(Object.assign({}, m1, { managedBy: 'stale' }), false));
  out.force = await step(reg.updateModule(Object.assign({}, m1, { managedBy: 'forced' }), true));
  out.removeM2 = await new Promise((resolve) => reg.removeModule(dev, 'm2', (err, r, res) => resolve(err ? fail(err) : { ok: true, statusCode: res && res.statusCode })));
  out.delete = await step(reg.delete(dev));
  out.getAfterDelete = await step(reg.get(dev));
  return { ok: true, steps: out };
}

async function main() {
  const cmd = JSON.parse(process.argv[2]);
  const timer = setTimeout(() => { console.log(JSON.stringify({ ok: false, name: 'Timeout' })); process.exit(3); }, (cmd.timeoutSec || 20) * 1000);
  let res;
  try {
    if (cmd.op === 'register') res = await register(cmd);
    else if (cmd.op === 'send') res = await sendEvent(cmd);
    else if (cmd.op === 'registry') res = await registry(cmd);
    else res = { ok: false, name: 'BadCommand' };
  } catch (e) {
    res = fail(e);
  }
  clearTimeout(timer);
  // Exit explicitly: a failed client keeps token-renewal timers alive.
  process.stdout.write(JSON.stringify(res) + '\n', () => process.exit(0));
}

main();
