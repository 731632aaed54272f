// Module-load hook: lets Node import the JSON schema files that
// @actions/workflow-parser imports without an import attribute.
export async function load(url, context, nextLoad) {
  if (url.endsWith(".json")) {
    return nextLoad(url, { ...context, importAttributes: { ...context.importAttributes, type: "json" } });
  }
  return nextLoad(url, context);
}
