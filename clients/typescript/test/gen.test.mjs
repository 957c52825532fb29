// The generator of src/protocol.ts: the committed file is what the schema gives; a schema
// change makes the check fail; shapes come out as the schema says; an unknown keyword stops it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { generate } from "../scripts/gen-protocol.mjs";

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const schemaPath = resolve(pkg, "../../protocol/v1/schema.json");
const script = resolve(pkg, "scripts/gen-protocol.mjs");

function runCheck(env) {
  return spawnSync(process.execPath, [script, "--check"], { env: { ...process.env, ...env }, encoding: "utf8" });
}

test("the committed src/protocol.ts is the schema's; a changed schema fails the check", () => {
  const schema = JSON.parse(readFileSync(schemaPath, "utf8"));
  assert.equal(generate(schema), readFileSync(resolve(pkg, "src/protocol.ts"), "utf8"));
  const ok = runCheck({});
  assert.equal(ok.status, 0, ok.stderr);

  const dir = mkdtempSync(join(tmpdir(), "gen-protocol-"));
  try {
    schema.$defs.ServerWelcome.properties.motd = { type: "string", description: "A new field." };
    const changed = join(dir, "schema.json");
    writeFileSync(changed, JSON.stringify(schema));
    const stale = runCheck({ GEN_PROTOCOL_SCHEMA: changed });
    assert.equal(stale.status, 1);
    assert.match(stale.stderr, /is stale/);
    // Generating writes the new field.
    const out = join(dir, "protocol.ts");
    const gen = spawnSync(process.execPath, [script], { env: { ...process.env, GEN_PROTOCOL_SCHEMA: changed, GEN_PROTOCOL_OUT: out }, encoding: "utf8" });
    assert.equal(gen.status, 0, gen.stderr);
    assert.match(readFileSync(out, "utf8"), /\/\*\* A new field\. \*\/\n  motd\?: string;/);
    assert.equal(runCheck({ GEN_PROTOCOL_SCHEMA: changed, GEN_PROTOCOL_OUT: out }).status, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("shapes: required and optional fields, nullable, enums, refs, discriminated variants", () => {
  const ts = generate({
    $defs: {
      Kind: { type: "string", enum: ["a", "b"] },
      Thing: {
        description: "A thing.",
        type: "object",
        properties: {
          id: { type: "string" },
          n: { type: ["integer", "null"] },
          kind: { $ref: "#/$defs/Kind" },
          tags: { type: "array", items: { type: "string" } },
          extra: { type: "object", additionalProperties: { type: "string" } },
        },
        required: ["id", "kind"],
        additionalProperties: false,
      },
      Job: {
        type: "object",
        properties: { id: { type: "string" }, state: { type: "string", enum: ["new", "done"] } },
        required: ["id", "state"],
        oneOf: [
          { properties: { state: { const: "new" } }, required: ["state"] },
          { properties: { state: { const: "done" }, at: { type: "string" } }, required: ["state", "at"] },
        ],
        unevaluatedProperties: false,
      },
      Empty: { type: "object", properties: {}, additionalProperties: false },
    },
  });
  assert.match(ts, /export type Kind = "a" \| "b";/);
  assert.match(ts, /\/\*\* A thing\. \*\/\nexport interface Thing \{\n  id: string;\n  n\?: number \| null;\n  kind: Kind;\n  tags\?: string\[\];\n  extra\?: \{ \[key: string\]: string \};\n\}/);
  assert.match(ts, /export type Job = \{\n  id: string;\n\} & \(\{\n  state: "new";\n\} \| \{\n  state: "done";\n  at: string;\n\}\);/);
  assert.match(ts, /export type Empty = Record<string, never>;/);
});

test("a keyword the generator does not know stops it", () => {
  assert.throws(
    () => generate({ $defs: { X: { type: "object", patternProperties: { "^a": { type: "string" } } } } }),
    /X: schema keyword patternProperties is not handled/,
  );
  assert.throws(() => generate({ $defs: { X: { $ref: "other.json#/X" } } }), /unsupported \$ref/);
});
