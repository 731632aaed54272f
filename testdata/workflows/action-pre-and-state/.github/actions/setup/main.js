const fs = require('fs');
const name = process.env.INPUT_NAME;
const state = process.env.STATE_phase;
if (state !== `pre-${name}`) {
  console.log(`::error::main saw STATE_phase=${state}, expected pre-${name}`);
  process.exit(1);
}
console.log(`main-script-saw-${state}`);
fs.appendFileSync(process.env.GITHUB_STATE, `phase=main-${name}\n`);
