const fs = require("fs");
const who = process.env["INPUT_WHO-TO-GREET"];
const punctuation = process.env["INPUT_PUNCTUATION"];
const greeting = `Hello ${who}${punctuation}`;
console.log(greeting);
fs.appendFileSync(process.env.GITHUB_OUTPUT, `greeting=${greeting}\n`);
fs.appendFileSync(process.env.GITHUB_STATE, `greeted=${who}\n`);
