console.log(`post step saw state greeted=${process.env.STATE_greeted}`);
