// libFuzzer target for evaluation data (src/eval/tasks.h): the input is a file of
// records, JSON lines or one JSON array, read by read_records for every task (mcq:
// LLM-Adapters and plain records; math: LLM-Adapters and GSM8K; rouge: dialogue and
// document summaries; ppl: {text} records), failing on the first bad record and then
// skipping bad ones; then each record's prompt and, for mcq, its continuations and
// reference index. Each call must succeed or throw flora::Error.
// Seeds: tests/fuzz/corpus/fuzz_eval_records/ (scripts/fuzz.sh runs it).
#include <cstddef>
#include <cstdint>
#include <string>

#include "eval/tasks.h"
#include "fuzz_common.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flora::eval;
  const std::string path = flora_fuzz::write_input(data, size, "records.jsonl");
  for (EvalTask task : {EvalTask::Mcq, EvalTask::Math, EvalTask::Rouge, EvalTask::Ppl}) {
    for (bool skip_bad : {false, true}) {
      try {
        const RecordSet set = read_records(path, task, skip_bad, skip_bad ? 0 : 3);
        for (const EvalRecord& r : set.records) {
          (void)record_prompt(r);
          if (task == EvalTask::Mcq) {
            (void)mcq_continuations(r);
            (void)mcq_reference_index(r);
          }
        }
      } catch (const flora::Error&) {
      }
    }
  }
  return 0;
}
