// One photo as the API shows it (GET /photos items, GET /photos/{id}/info, event streams): one line of JSON.
#pragma once

#include <string>

#include "db/repositories.h"

namespace petcam::api {

void append_photo(std::string& out, const db::Photo& photo);

}  // namespace petcam::api
