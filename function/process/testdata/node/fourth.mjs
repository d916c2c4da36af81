// ESM.md's worked example as a Node.js Lambda function: a Kinesis handler
// that reports the 4th record of every batch of at least 4 in
// batchItemFailures, and appends each batch's size to the file named by
// IDEM_TEST_SIZES. (function/process/testdata/fourth is the Go version.)
import { appendFileSync } from "node:fs";

export const handler = async (event) => {
  const records = event.Records ?? [];
  if (process.env.IDEM_TEST_SIZES) {
    appendFileSync(process.env.IDEM_TEST_SIZES, `${records.length}\n`);
  }
  const batchItemFailures = [];
  if (records.length >= 4) {
    batchItemFailures.push({ itemIdentifier: records[3].eventID });
  }
  return { batchItemFailures };
};
