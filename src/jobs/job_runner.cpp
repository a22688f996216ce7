#include "jobs/job_runner.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "imaging/imaging.h"
#include "imaging/outscale.h"
#include "storage/files.h"
#include "upscaler/model_path.h"
#include "upscaler/upscaler.h"

namespace petcam::jobs {

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// Thrown from the progress callback between tiles: to return the job to the queue (stopping), or to drop it
// because its photo was deleted (nothing to keep).
struct Cancelled {};
struct PhotoDeleted {};

// Progress is written at most this often per job (and at its end by completion).
constexpr auto kProgressEvery = std::chrono::milliseconds(250);

// What a person sees as a failed photo's `error`: the kind of failure, never a path, SQL or stack.
std::string reason_for(const std::exception& e) {
  if (dynamic_cast<const imaging::ImageTooLarge*>(&e)) return "The image is too large to process";
  if (dynamic_cast<const imaging::ImageError*>(&e)) return "Image could not be decoded";
  if (dynamic_cast<const storage::FileError*>(&e)) return "The result could not be saved; try again later";
  if (dynamic_cast<const upscaler::ModelError*>(&e)) return "The upscaler could not run on this server";
  if (dynamic_cast<const std::bad_alloc*>(&e)) return "Not enough memory to process this image";
  return "Processing failed";
}

constexpr std::size_t kMaxOriginalBytes = 1ull << 30;

std::string host_name() {
  char buf[256] = {};
  return ::gethostname(buf, sizeof buf - 1) == 0 ? std::string(buf) : std::string("unknown");
}

}  // namespace

struct JobRunner::Worker {
  std::string name;  // <instance_id>/<index>: the lease owner in the jobs table
  std::unique_ptr<upscaler::Upscaler> model;
  std::thread thread;
  std::mutex mutex;      // guards job_id, photo_id
  std::string job_id;    // the job it runs now, for the heartbeat
  std::string photo_id;  // that job's photo
  std::atomic<bool> cancel{false};
  std::atomic<bool> photo_deleted{false};  // the running job's photo is gone: stop it
};

JobRunner::JobRunner(const config::Settings& settings, db::Database& db, storage::PhotoStore& store)
    : settings_(settings), db_(db), store_(store) {}

JobRunner::~JobRunner() {
  stop();
}

void JobRunner::start() {
  if (settings_.job_workers <= 0) return;
  upscaler::Params params;
  params.model_path = upscaler::resolve_model(settings_.model, settings_.models_dir);
  params.precision = upscaler::parse_precision(settings_.precision);
  params.engine = upscaler::parse_engine(settings_.engine);
  params.tile = settings_.tile;
  params.threads = settings_.inference_threads;
  // DEVICE=cuda (or auto finding CUDA) without an index spreads the workers over every visible GPU.
  const auto asked = upscaler::parse_device(settings_.device);
  const auto first = upscaler::resolve_device(asked);  // throws DeviceError: CUDA asked for, none there
  const bool spread = first.kind == upscaler::DeviceKind::Cuda && asked.index < 0;
  const int gpus = spread ? upscaler::cuda_device_count() : 1;
  std::string devices;
  for (int i = 0; i < settings_.job_workers; ++i) {
    auto w = std::make_unique<Worker>();
    w->name = settings_.instance_id + "/" + std::to_string(i);
    params.device = spread ? upscaler::Device{upscaler::DeviceKind::Cuda, i % gpus} : first;
    w->model = upscaler::Upscaler::load(params);
    const auto d = upscaler::to_string(w->model->device());
    if (devices.find(d) == std::string::npos) devices += (devices.empty() ? "" : ", ") + d;
    workers_.push_back(std::move(w));
  }
  const auto& m = *workers_.front()->model;
  spdlog::info("jobs: {} worker(s) on {}, model {} ({}), {}, tile {}+{}, engine {}", workers_.size(), devices,
               params.model_path, m.architecture(), upscaler::to_string(m.precision()), m.tile(), m.tile_pad(),
               m.engine());

  // Whatever this instance held when it last stopped cannot be running now.
  const int recovered = db::JobRepository(db_).recover(wall_ms(), settings_.instance_id + "/");
  if (recovered > 0) spdlog::warn("jobs: recovered {} job(s) left processing by a previous run", recovered);

  db::WorkerRepository registry(db_);
  for (auto& w : workers_)
    registry.announce({w->name, host_name(), settings_.model, upscaler::to_string(w->model->device()),
                       upscaler::to_string(w->model->precision())},
                      wall_ms());

  for (auto& w : workers_) w->thread = std::thread([this, p = w.get()] { work(*p); });
  heartbeat_thread_ = std::thread([this] { heartbeat(); });
}

void JobRunner::wake() {
  {
    std::lock_guard lock(mutex_);
    ++wakeups_;
  }
  wake_cv_.notify_one();
}

void JobRunner::wake_all() {
  {
    std::lock_guard lock(mutex_);
    ++wakeups_;
  }
  wake_cv_.notify_all();
}

void JobRunner::stop() {
  if (stopping_.exchange(true)) return;
  for (auto& w : workers_) w->cancel = true;
  {
    std::lock_guard lock(mutex_);  // a waiter between its check and its wait must not miss this
  }
  wake_cv_.notify_all();
  stop_cv_.notify_all();
  for (auto& w : workers_)
    if (w->thread.joinable()) w->thread.join();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  for (auto& w : workers_) {
    try {
      db::WorkerRepository(db_).remove(w->name);
    } catch (const std::exception& e) {
      spdlog::warn("jobs: could not sign {} off: {}", w->name, e.what());
    }
  }
}

void JobRunner::work(Worker& w) {
  const auto poll = std::chrono::milliseconds(settings_.job_poll_ms);
  db::JobRepository jobs(db_);
  while (!stopping_) {
    std::optional<db::ClaimedJob> job;
    std::uint64_t seen;
    {
      std::lock_guard lock(mutex_);
      seen = wakeups_;
    }
    try {
      const auto now = wall_ms();
      job = jobs.claim(w.name, now, now + settings_.job_lease_s * 1000ll);
    } catch (const std::exception& e) {
      spdlog::error("jobs: {} cannot claim: {}", w.name, e.what());
    }
    if (!job) {
      std::unique_lock lock(mutex_);
      wake_cv_.wait_for(lock, poll, [&] { return stopping_ || wakeups_ != seen; });
      continue;
    }
    {
      std::lock_guard lock(w.mutex);
      w.job_id = job->id;
      w.photo_id = job->photo_id;
      w.photo_deleted = false;
    }
    run_job(w, *job);
    std::lock_guard lock(w.mutex);
    w.job_id.clear();
    w.photo_id.clear();
  }
}

void JobRunner::photos_deleted(const std::vector<std::string>& photo_ids) {
  for (auto& w : workers_) {
    std::lock_guard lock(w->mutex);
    if (!w->photo_id.empty() && std::find(photo_ids.begin(), photo_ids.end(), w->photo_id) != photo_ids.end())
      w->photo_deleted = true;
  }
}

void JobRunner::run_job(Worker& w, const db::ClaimedJob& job) {
  db::JobRepository jobs(db_);
  const auto started = Clock::now();
  spdlog::info("job {} photo {}: started by {} (attempt {}/{})", job.id, job.photo_id, w.name, job.attempts,
               job.max_attempts);
  const auto format = imaging::parse_output_format(job.format).value_or(imaging::OutputFormat::Jpeg);
  const auto out_rel = storage::PhotoStore::upscaled_path(job.photo_id, imaging::extension(format));
  const auto preview_rel = storage::PhotoStore::preview_path(job.photo_id);
  // Tiles done as progress 0.02..0.95 (decoding before, encoding and writing after), throttled; a photo found
  // gone on the way (told by this process, or found by the progress write) stops the job.
  auto last_write = Clock::now() - kProgressEvery;
  const auto report = [&](double fraction, bool force) {
    if (w.cancel) throw Cancelled{};
    if (w.photo_deleted) throw PhotoDeleted{};
    if (!force && Clock::now() - last_write < kProgressEvery) return;
    last_write = Clock::now();
    bool exists = true;
    try {
      exists = jobs.progress(job.photo_id, std::round(fraction * 1000) / 1000);
    } catch (const std::exception& e) {
      spdlog::debug("job {} photo {}: progress not recorded: {}", job.id, job.photo_id, e.what());
    }
    if (!exists) throw PhotoDeleted{};
  };
  try {
    const auto bytes = store_.read(job.original_path, kMaxOriginalBytes);
    imaging::Limits limits;
    limits.max_pixels = settings_.max_image_pixels;
    auto photo = imaging::decode(bytes, limits);
    report(0.02, false);
    const int s = w.model->scale();
    cv::Mat out(photo.rgb.rows * s, photo.rgb.cols * s, CV_8UC3);
    w.model->process({photo.rgb.data, photo.rgb.cols, photo.rgb.rows, photo.rgb.step},
                     {out.data, out.cols, out.rows, out.step},
                     [&](int done, int total) { report(0.02 + 0.93 * done / std::max(1, total), done == total); });
    const auto size = imaging::outscaled(photo.rgb.cols, photo.rgb.rows, job.outscale);
    if (size.width != out.cols || size.height != out.rows) out = imaging::resize_to(out, size.width, size.height);
    cv::Mat preview = imaging::fit_within(out, settings_.preview_size);
    const auto preview_bytes = imaging::encode(preview, photo.grayscale, imaging::OutputFormat::Jpeg, &photo.meta, 85);
    preview.release();
    const auto encoded = imaging::encode(out, photo.grayscale, format, &photo.meta, 95);
    if (w.cancel) throw Cancelled{};
    if (w.photo_deleted) throw PhotoDeleted{};
    // The result last, as a completed photo has both.
    store_.write(preview_rel, preview_bytes);
    store_.write(out_rel, encoded);
    const double secs = std::chrono::duration<double>(Clock::now() - started).count();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
    if (record_completion(w, job, out_rel, ms, size)) {
      spdlog::info("job {} photo {}: completed {}x{} -> {}x{} in {:.2f} s ({})", job.id, job.photo_id, photo.rgb.cols,
                   photo.rgb.rows, out.cols, out.rows, secs, job.format);
    } else if (!jobs.photo_exists(job.photo_id)) {
      store_.remove_photo(job.photo_id);  // deleted while it ran: leave nothing behind
      spdlog::info("job {} photo {}: photo was deleted while processing; output removed", job.id, job.photo_id);
    } else {
      spdlog::warn("job {} photo {}: lease lost to another worker; its result stands", job.id, job.photo_id);
    }
  } catch (const PhotoDeleted&) {
    // The row went first; files this job or the upload wrote may still be there.
    store_.remove_photo(job.photo_id);
    spdlog::info("job {} photo {}: photo was deleted while processing; stopped, output removed", job.id, job.photo_id);
  } catch (const Cancelled&) {
    try {
      jobs.release(job.id, w.name, wall_ms());
      spdlog::info("job {} photo {}: returned to the queue (stopping)", job.id, job.photo_id);
    } catch (const std::exception& e) {
      spdlog::error("job {} photo {}: could not return it to the queue ({}); its lease will expire", job.id,
                    job.photo_id, e.what());
    }
  } catch (const std::exception& e) {
    const auto now = wall_ms();
    const auto backoff_ms =
        static_cast<std::int64_t>(settings_.job_retry_base_s * 1000.0 * std::pow(2.0, std::max(0, job.attempts - 1)));
    try {
      switch (jobs.fail(job.id, w.name, e.what(), now, now + backoff_ms, reason_for(e))) {
        case db::FailOutcome::Retrying:
          spdlog::warn("job {} photo {}: attempt {}/{} failed: {}; retrying in {} s", job.id, job.photo_id,
                       job.attempts, job.max_attempts, e.what(), backoff_ms / 1000);
          break;
        case db::FailOutcome::Failed:
          spdlog::error("job {} photo {}: failed after {} attempt(s): {}", job.id, job.photo_id, job.attempts,
                        e.what());
          break;
        case db::FailOutcome::LeaseLost:
          spdlog::warn("job {} photo {}: failed ({}) after losing its lease or its photo", job.id, job.photo_id,
                       e.what());
          break;
      }
    } catch (const std::exception& e2) {
      spdlog::error("job {} photo {}: failed ({}) and could not record it ({}); its lease will expire", job.id,
                    job.photo_id, e.what(), e2.what());
    }
  }
}

bool JobRunner::record_completion(Worker& w, const db::ClaimedJob& job, const std::string& out_rel,
                                  std::int64_t duration_ms, imaging::Size size) {
  // The result is on disk: a database outage must not cost the work (or an attempt). Keep trying for as long
  // as a lease lasts, unless we are stopping; a lease that expired meanwhile is still ours unless taken over.
  db::JobRepository jobs(db_);
  const auto give_up = Clock::now() + std::chrono::seconds(settings_.job_lease_s);
  for (bool warned = false;; warned = true) {
    try {
      return jobs.complete(job.id, w.name, out_rel, wall_ms(), settings_.model, duration_ms, size.width, size.height);
    } catch (const db::Unavailable& e) {
      if (w.cancel || Clock::now() >= give_up) throw;
      if (!warned)
        spdlog::warn("job {} photo {}: done, but the database is unavailable ({}); retrying to record it", job.id,
                     job.photo_id, e.what());
      std::unique_lock lock(mutex_);
      stop_cv_.wait_for(lock, std::chrono::milliseconds(500), [&] { return stopping_.load(); });
    }
  }
}

void JobRunner::heartbeat() {
  db::JobRepository jobs(db_);
  const auto every = std::chrono::milliseconds(std::max(500, settings_.job_lease_s * 1000 / 3));
  while (!stopping_) {
    {
      std::unique_lock lock(mutex_);
      stop_cv_.wait_for(lock, every, [&] { return stopping_.load(); });
    }
    if (stopping_) return;
    // Our own leases first, so a late beat never finds (and requeues) one of our own running jobs.
    for (auto& w : workers_) {
      std::string id;
      {
        std::lock_guard lock(w->mutex);
        id = w->job_id;
      }
      if (id.empty()) continue;
      try {
        if (jobs.renew(id, w->name, wall_ms() + settings_.job_lease_s * 1000ll)) continue;
        std::string photo_id;
        {
          std::lock_guard lock(w->mutex);
          if (w->job_id != id) continue;  // finished meanwhile
          photo_id = w->photo_id;
        }
        if (jobs.photo_exists(photo_id)) {
          spdlog::warn("job {}: lease could not be renewed (taken over)", id);
          continue;
        }
        // Deleted, perhaps by another process: stop the work now rather than at completion.
        std::lock_guard lock(w->mutex);
        if (w->job_id == id) w->photo_deleted = true;
        spdlog::info("job {} photo {}: deleted while processing; stopping it", id, photo_id);
      } catch (const std::exception& e) {
        spdlog::error("job {}: lease renewal failed: {}", id, e.what());
      }
    }
    try {
      db::WorkerRepository registry(db_);
      for (auto& w : workers_) registry.heartbeat(w->name, wall_ms());
      // A worker that died (here or in another process) stopped renewing its lease: once it has
      // expired, put the job back in the queue for whoever is free.
      if (const int n = jobs.recover(wall_ms(), "")) {
        spdlog::warn("jobs: requeued {} job(s) whose worker stopped renewing its lease", n);
        wake_all();
      }
    } catch (const std::exception& e) {
      spdlog::error("jobs: worker heartbeat failed: {}", e.what());
    }
  }
}

}  // namespace petcam::jobs
