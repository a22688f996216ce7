#include "config/dotenv.h"

#include <gtest/gtest.h>

#include "config/settings.h"

using petcam::config::ConfigError;
using petcam::config::parse_dotenv;

TEST(Dotenv, ReadsTheOriginalsExample) {
  const auto env = parse_dotenv(
      "# JWT secret (openssl rand -hex 32)\n"
      "SECRET_KEY=your-super-secret-key-change-this\n"
      "\n"
      "export POSTGRES_USER=petuser\n"
      "DATABASE_URL=\"postgresql://petuser:p#ss@db:5432/petdb\"  # quoted keeps the #\n"
      "ACCESS_TOKEN_EXPIRE_MINUTES = 30 # minutes\n"
      "EMPTY=\n"
      "SINGLE='a b'\r\n",
      ".env");
  EXPECT_EQ(env.at("SECRET_KEY"), "your-super-secret-key-change-this");
  EXPECT_EQ(env.at("POSTGRES_USER"), "petuser");
  EXPECT_EQ(env.at("DATABASE_URL"), "postgresql://petuser:p#ss@db:5432/petdb");
  EXPECT_EQ(env.at("ACCESS_TOKEN_EXPIRE_MINUTES"), "30");
  EXPECT_EQ(env.at("EMPTY"), "");
  EXPECT_EQ(env.at("SINGLE"), "a b");
  EXPECT_EQ(env.size(), 6u);
}

TEST(Dotenv, NamesTheLineOfAMistake) {
  auto error_of = [](const char* text) -> std::string {
    try {
      parse_dotenv(text, ".env");
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of("A=1\nnonsense\n"), ".env line 2: expected KEY=VALUE");
  EXPECT_EQ(error_of("1A=1"), ".env line 1: '1A' is not a valid variable name");
  EXPECT_EQ(error_of("A=\"open"), ".env line 1: unterminated quote");
  EXPECT_EQ(error_of("A=\"x\" y"), ".env line 1: text after the closing quote");
}

TEST(Settings, DeviceAndPrecisionAreCheckedAtStart) {
  using petcam::config::load_settings;
  EXPECT_EQ(load_settings({}).device, "auto");
  EXPECT_EQ(load_settings({{"DEVICE", "cuda:1"}}).device, "cuda:1");
  EXPECT_EQ(load_settings({{"PRECISION", "fp16"}}).precision, "fp16");
  try {
    load_settings({{"DEVICE", "gpu"}});
    ADD_FAILURE() << "DEVICE=gpu accepted";
  } catch (const petcam::config::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("DEVICE=gpu: device must be auto, cpu, cuda or cuda:N"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(load_settings({{"PRECISION", "half"}}), petcam::config::ConfigError);
}
