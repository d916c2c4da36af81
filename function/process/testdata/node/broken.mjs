// A Node.js function whose module throws while it is imported, as one
// that cannot reach its database at start does.
throw new Error("cannot connect to the database");
