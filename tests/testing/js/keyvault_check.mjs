// The official JavaScript Key Vault SDK against a LocalKeyVault: key lifecycle, wrap/unwrap,
// sign/verify (and the *Data variants), backup/restore, checked with Node's own crypto where
// it can judge the vault's output. Configured by the environment (see test_js_sdk.py); prints
// "ok <step>" per step and exits non-zero on the first failure.
import assert from "node:assert/strict";
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, verify as nodeVerify } from "node:crypto";

import { ClientSecretCredential } from "@azure/identity";
import { CryptographyClient, KeyClient } from "@azure/keyvault-keys";

const { VAULT_URL, TENANT_ID, CLIENT_ID, CLIENT_SECRET } = process.env;
const credential = new ClientSecretCredential(TENANT_ID, CLIENT_ID, CLIENT_SECRET, {
  authorityHost: VAULT_URL,
  disableInstanceDiscovery: true,
});
// The vault is https://127.0.0.1:PORT, not a *.vault.azure.net name.
const options = { disableChallengeResourceVerification: true, retryOptions: { maxRetries: 0 } };
const client = new KeyClient(VAULT_URL, credential, options);
const crypto = (key) => new CryptographyClient(key, credential, options);
const b64url = (bytes) => Buffer.from(bytes).toString("base64url");

async function rejects(promise, status) {
  try {
    await promise;
  } catch (error) {
    assert.equal(error.statusCode, status, `expected HTTP ${status}, got ${error.statusCode}: ${error.message}`);
    return error;
  }
  assert.fail(`expected HTTP ${status}, the call succeeded`);
}

const steps = {
  async lifecycle() {
    const created = await client.createRsaKey("js-life", { keySize: 2048, tags: { from: "js" } });
    assert.equal(created.keyType, "RSA");
    assert.equal(created.key.n.length, 256);
    assert.equal((await client.getKey("js-life")).id, created.id);
    const updated = await client.updateKeyProperties("js-life", created.properties.version, {
      enabled: false,
      tags: { from: "js", state: "off" },
    });
    assert.equal(updated.properties.enabled, false);
    const rotated = await client.rotateKey("js-life");
    assert.notEqual(rotated.properties.version, created.properties.version);
    const versions = [];
    for await (const version of client.listPropertiesOfKeyVersions("js-life")) versions.push(version.version);
    assert.deepEqual(new Set(versions), new Set([created.properties.version, rotated.properties.version]));
    const names = [];
    for await (const properties of client.listPropertiesOfKeys()) names.push(properties.name);
    assert.ok(names.includes("js-life"));
    const poller = await client.beginDeleteKey("js-life", { intervalInMs: 10 });
    const deleted = await poller.pollUntilDone();
    assert.equal(deleted.name, "js-life");
    assert.equal((await client.getDeletedKey("js-life")).name, "js-life");
    await client.purgeDeletedKey("js-life");
    await rejects(client.getKey("js-life"), 404);
  },

  async wrapUnwrap() {
    const rsa = await client.createRsaKey("js-wrap", { keySize: 3072 });
    const dek = randomBytes(32);
    for (const algorithm of ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"]) {
      const wrapped = await crypto(rsa).wrapKey(algorithm, dek);
      // A client given only the key id cannot wrap locally: the unwrap is the vault's.
      const unwrapped = await crypto(rsa.id).unwrapKey(algorithm, wrapped.result);
      assert.deepEqual(Buffer.from(unwrapped.result), dek);
    }
    const aes = await client.createOctKey("js-aes", { hsm: true, keySize: 256 });
    assert.equal(aes.key.k, undefined);
    for (const algorithm of ["A256KW", "CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD"]) {
      const wrapped = await crypto(aes.id).wrapKey(algorithm, dek);
      const unwrapped = await crypto(aes.id).unwrapKey(algorithm, wrapped.result);
      assert.deepEqual(Buffer.from(unwrapped.result), dek);
    }
    const sealed = await crypto(aes.id).encrypt({
      algorithm: "A256GCM",
      plaintext: Buffer.from("js gcm"),
      additionalAuthenticatedData: Buffer.from("ctx"),
    });
    const opened = await crypto(aes.id).decrypt({
      algorithm: "A256GCM",
      ciphertext: sealed.result,
      iv: sealed.iv,
      authenticationTag: sealed.authenticationTag,
      additionalAuthenticatedData: Buffer.from("ctx"),
    });
    assert.equal(Buffer.from(opened.result).toString(), "js gcm");
    const iv = randomBytes(16);
    const cbc = await crypto(aes.id).encrypt({ algorithm: "A256CBCPAD", plaintext: Buffer.from("js cbc"), iv });
    const plain = await crypto(aes.id).decrypt({ algorithm: "A256CBCPAD", ciphertext: cbc.result, iv });
    assert.equal(Buffer.from(plain.result).toString(), "js cbc");
    const tampered = Buffer.from((await crypto(aes.id).wrapKey("A256KW", dek)).result);
    tampered[3] ^= 1;
    await rejects(crypto(aes.id).unwrapKey("A256KW", tampered), 400);
  },

  async signVerify() {
    const message = Buffer.from("signed by the local vault");
    const curves = { "P-256": ["ES256", "sha256"], "P-384": ["ES384", "sha384"], "P-521": ["ES512", "sha512"], "P-256K": ["ES256K", "sha256"] };
    for (const [curve, [algorithm, hash]] of Object.entries(curves)) {
      const key = await client.createEcKey(`js-ec-${curve.replace("-", "")}`, { curve });
      const digest = createHash(hash).update(message).digest();
      const signed = await crypto(key.id).sign(algorithm, digest);
      assert.ok((await crypto(key.id).verify(algorithm, digest, signed.result)).result);
      const data = await crypto(key.id).signData(algorithm, message);
      assert.ok((await crypto(key.id).verifyData(algorithm, message, data.result)).result);
      assert.equal((await crypto(key.id).verifyData(algorithm, Buffer.from("other"), data.result)).result, false);
      // Node's own crypto checks the vault's JWK (fixed-length x and y) and signature.
      const jwk = { kty: "EC", crv: curve === "P-256K" ? "secp256k1" : curve, x: b64url(key.key.x), y: b64url(key.key.y) };
      const publicKey = createPublicKey({ key: jwk, format: "jwk" });
      assert.ok(nodeVerify(hash, message, { key: publicKey, dsaEncoding: "ieee-p1363" }, Buffer.from(data.result)), `node rejects the ${algorithm} signature`);
    }
    const rsa = await client.createRsaKey("js-sign-rsa", { keySize: 2048 });
    for (const [algorithm, hash] of [["RS256", "sha256"], ["PS384", "sha384"], ["RS512", "sha512"]]) {
      const data = await crypto(rsa.id).signData(algorithm, message);
      const digest = createHash(hash).update(message).digest();
      // verify() of a digest always goes to the vault for RSA keys.
      assert.ok((await crypto(rsa.id).verify(algorithm, digest, data.result)).result, `the vault rejects ${algorithm}`);
      if (algorithm.startsWith("RS")) {
        // The SDK's local verifyData checks PKCS#1 v1.5 whatever the algorithm, so it can
        // judge RS* signatures only.
        assert.ok((await crypto(rsa).verifyData(algorithm, message, data.result)).result, `${algorithm} does not verify locally`);
      }
      const publicKey = createPublicKey({ key: { kty: "RSA", n: b64url(rsa.key.n), e: b64url(rsa.key.e) }, format: "jwk" });
      const padding = algorithm.startsWith("PS") ? 6 /* RSA_PKCS1_PSS_PADDING */ : 1;
      assert.ok(nodeVerify(hash, message, { key: publicKey, padding, saltLength: createHash(hash).digest().length }, Buffer.from(data.result)));
    }
    // A digest of the wrong length is refused by the vault.
    await rejects(crypto(rsa.id).sign("RS256", randomBytes(20)), 400);
  },

  async importKey() {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-384" });
    const jwk = privateKey.export({ format: "jwk" });
    const bytes = (field) => Buffer.from(jwk[field], "base64url");
    const imported = await client.importKey("js-imported", {
      kty: "EC",
      crv: "P-384",
      x: bytes("x"),
      y: bytes("y"),
      d: bytes("d"),
      keyOps: ["sign", "verify"],
    });
    assert.equal(b64url(imported.key.x), jwk.x);
    assert.equal(imported.key.d, undefined);
    const message = Buffer.from("imported");
    const signed = await crypto(imported.id).signData("ES384", message);
    const publicKey = createPublicKey(privateKey);
    assert.ok(nodeVerify("sha384", message, { key: publicKey, dsaEncoding: "ieee-p1363" }, Buffer.from(signed.result)));
  },

  async backupRestore() {
    const key = await client.createRsaKey("js-backup", { keySize: 2048 });
    const second = await client.rotateKey("js-backup");
    const blob = await client.backupKey("js-backup");
    const dek = randomBytes(32);
    const wrapped = await crypto(second).wrapKey("RSA-OAEP-256", dek);
    await (await client.beginDeleteKey("js-backup", { intervalInMs: 10 })).pollUntilDone();
    await client.purgeDeletedKey("js-backup");
    const tampered = Buffer.from(blob);
    tampered[tampered.length - 5] ^= 1;
    await rejects(client.restoreKeyBackup(tampered), 400);
    const restored = await client.restoreKeyBackup(blob);
    assert.equal(restored.id, second.id);
    const versions = [];
    for await (const version of client.listPropertiesOfKeyVersions("js-backup")) versions.push(version.version);
    assert.deepEqual(new Set(versions), new Set([key.properties.version, second.properties.version]));
    const unwrapped = await crypto(restored.id).unwrapKey("RSA-OAEP-256", wrapped.result);
    assert.deepEqual(Buffer.from(unwrapped.result), dek);
    await rejects(client.restoreKeyBackup(blob), 409);
  },

  async randomBytesAndRotationPolicy() {
    const random = await client.getRandomBytes(32);
    assert.equal(random.length, 32);
    await client.createEcKey("js-policy", { curve: "P-256" });
    const policy = await client.updateKeyRotationPolicy("js-policy", {
      lifetimeActions: [{ action: "Rotate", timeAfterCreate: "P30D" }],
      expiresIn: "P90D",
    });
    assert.equal(policy.expiresIn, "P90D");
    const fetched = await client.getKeyRotationPolicy("js-policy");
    assert.equal(fetched.lifetimeActions[0].timeAfterCreate, "P30D");
  },
};

for (const [name, step] of Object.entries(steps)) {
  try {
    await step();
    console.log(`ok ${name}`);
  } catch (error) {
    console.log(`not ok ${name}: ${error.stack ?? error}`);
    process.exit(1);
  }
}
