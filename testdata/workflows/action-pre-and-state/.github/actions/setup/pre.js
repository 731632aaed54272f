const fs = require('fs');
const name = process.env.INPUT_NAME;
console.log(`pre-script-for-${name}`);
fs.appendFileSync(process.env.GITHUB_STATE, `phase=pre-${name}\n`);
