// What every handler needs, found once at start and passed in (no globals).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "auth/auth.h"
#include "config/settings.h"
#include "db/database.h"
#include "storage/photo_store.h"

namespace petcam::api {

struct Context {
  const config::Settings& settings;
  db::Database& db;
  storage::PhotoStore& store;
  auth::TokenKey token_key;
  std::function<void()> job_queued;  // wakes the job workers of this process
  // These photos' rows are gone (committed): this process's workers drop their jobs on them now (other
  // processes' workers notice when their lease renewal finds the job gone).
  std::function<void(const std::vector<std::string>&)> photos_deleted;
  // This user's account is gone: their open event streams end (set by the HTTP layer, which holds them).
  std::function<void(const std::string&)> account_deleted;
};

}  // namespace petcam::api
