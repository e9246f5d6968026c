#include "daemon/api/MetricsText.h"

#include <fmt/format.h>

namespace rafsd {

namespace {

// Label values escape backslash, double quote and newline.
std::string escaped(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (const char c : value) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

}  // namespace

void MetricsText::family(std::string_view name, std::string_view type, std::string_view help) {
    text_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void MetricsText::labelsOf(const Labels& labels, std::string_view extra_name, std::string_view extra_value) {
    if (labels.empty() && extra_name.empty()) return;
    text_ += '{';
    bool first = true;
    for (const auto& [name, value] : labels) {
        text_ += fmt::format("{}{}=\"{}\"", first ? "" : ",", name, escaped(value));
        first = false;
    }
    if (!extra_name.empty()) text_ += fmt::format("{}{}=\"{}\"", first ? "" : ",", extra_name, extra_value);
    text_ += '}';
}

void MetricsText::sample(std::string_view name, const Labels& labels, uint64_t value) {
    text_ += name;
    labelsOf(labels);
    text_ += fmt::format(" {}\n", value);
}

void MetricsText::histogram(std::string_view name, const Labels& labels, const LatencyHistogram::Snapshot& snapshot) {
    for (size_t i = 0; i < LatencyHistogram::kBoundsUs.size(); ++i) {
        text_ += fmt::format("{}_bucket", name);
        labelsOf(labels, "le", fmt::format("{}", static_cast<double>(LatencyHistogram::kBoundsUs[i]) / 1e6));
        text_ += fmt::format(" {}\n", snapshot.cumulative[i]);
    }
    text_ += fmt::format("{}_bucket", name);
    labelsOf(labels, "le", "+Inf");
    text_ += fmt::format(" {}\n", snapshot.count);
    text_ += fmt::format("{}_sum", name);
    labelsOf(labels);
    text_ += fmt::format(" {}\n", static_cast<double>(snapshot.sum_us) / 1e6);
    text_ += fmt::format("{}_count", name);
    labelsOf(labels);
    text_ += fmt::format(" {}\n", snapshot.count);
}

}  // namespace rafsd
