// The job half of GET /metrics, read from the database so every API process reports the whole
// cluster: jobs by state, queue depth and oldest queued age, job durations by model, live workers.
#pragma once

#include <string>

#include "api/context.h"

namespace petcam::api {

std::string job_metrics(Context& ctx);  // Prometheus text; DB calls: run on the work pool

}  // namespace petcam::api
