// validate_k8s.mjs: validates every object of the Kubernetes manifests named on the command line
// against the Kubernetes schema (kubernetes-models: the OpenAPI schema of Kubernetes 1.27, with
// ajv). Prints one JSON line per object ({file, kind, name, error}) and exits 1 when one is
// invalid or of a kind it does not know. Used by test_deploy.py.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import * as core from "kubernetes-models/v1";
import * as apps from "kubernetes-models/apps/v1";

const groups = { "v1": core, "apps/v1": apps };
let bad = 0;
for (const file of process.argv.slice(2)) {
  // YAML 1.1, as kubectl reads it
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"), { version: "1.1" })) {
    const object = doc.toJS();
    if (object === null) continue;
    const model = (groups[object.apiVersion] || {})[object.kind];
    let error = null;
    if (doc.errors.length) error = doc.errors.map(String).join("; ");
    else if (!model) error = "unknown apiVersion/kind " + object.apiVersion + "/" + object.kind;
    else {
      try {
        new model(object).validate();
      } catch (e) {
        error = e.message;
      }
    }
    if (error) bad++;
    console.log(JSON.stringify({ file, kind: object.kind, name: object.metadata?.name, error }));
  }
}
process.exit(bad ? 1 : 0);
