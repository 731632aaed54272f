const name = process.env.INPUT_NAME;
console.log(`post-script-saw-${process.env.STATE_phase}`);
