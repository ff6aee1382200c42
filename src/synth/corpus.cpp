#include "synth/corpus.h"

#include <fmt/format.h>

#include <algorithm>

namespace flora::synth {

namespace {

// Phrasings of a person's facts: {s} subject (name or pronoun), {p} possessive
// ("Mira's", "Her"), {v} value, {av} value with its article. The first one,
// with the name, is the canonical sentence of World::sentence.
const char* const kTownForms[] = {"{s} lives in {v}.", "{p} home is in {v}.", "{s} has a house in {v}.",
                                  "{s} lives in the town of {v}."};
const char* const kJobForms[] = {"{s} is {av}.", "{s} works as {av}.", "{s} has a job as {av}."};
const char* const kAgeForms[] = {"{s} is {v} years old.", "{s} is {v}.", "{p} age is {v}."};
const char* const kColourForms[] = {"{p} favourite colour is {v}.", "{s} likes {v} best.", "{s} loves the colour {v}."};
const char* const kPetForms[] = {"{s} has a pet {v}.", "{s} keeps {av} as a pet.", "{p} pet is {av}."};

template <size_t N>
std::string person_sentence(const char* const (&forms)[N], bool canonical, const std::string& s, const std::string& p,
                            const std::string& v, Rng& rng) {
  const char* form = canonical ? forms[0] : forms[rng.below(N)];
  return fmt::format(fmt::runtime(form), fmt::arg("s", s), fmt::arg("p", p), fmt::arg("v", v), fmt::arg("av", a_an(v)));
}

std::string join_sentences(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : " ") + p;
  return out;
}

std::string person_doc(const World& w, int i, bool canonical, Rng& rng) {
  const Person& p = w.people[i];
  const std::string pron = capitalize(World::he(p)), poss = capitalize(World::his(p));
  std::vector<int> order = {0, 1, 2, 3, 4};
  rng.shuffle(order);
  std::vector<std::string> out;
  bool context_said = false;
  for (size_t k = 0; k < order.size(); ++k) {
    // The name starts a document; later sentences may use the pronoun.
    const bool by_name = canonical || k == 0 || rng.chance(0.5);
    const std::string s = by_name ? p.name : pron, ps = by_name ? p.name + "'s" : poss;
    switch (order[k]) {
      case 0:
        out.push_back(person_sentence(kTownForms, canonical, s, ps, w.towns[p.town].name, rng));
        break;
      case 1:
        out.push_back(person_sentence(kJobForms, canonical, s, ps, w.jobs[p.job].name, rng));
        break;
      case 2:
        out.push_back(person_sentence(kAgeForms, canonical, s, ps, std::to_string(p.age), rng));
        break;
      case 3:
        out.push_back(person_sentence(kColourForms, canonical, s, ps, w.colours[p.colour], rng));
        break;
      default:
        out.push_back(person_sentence(kPetForms, canonical, s, ps, w.animals[p.pet].name, rng));
        break;
    }
    // A sentence that uses the facts in context (one at most).
    if (!canonical && !context_said && rng.chance(0.15)) {
      context_said = true;
      switch (rng.below(3)) {
        case 0:
          out.push_back(fmt::format("Every morning {} goes to work {}.", World::he(p), w.jobs[p.job].place));
          break;
        case 1:
          out.push_back(fmt::format("{} often takes {} {} for a walk around {}.", pron, World::his(p),
                                    w.animals[p.pet].name, w.towns[p.town].name));
          break;
        default:
          out.push_back(fmt::format("Many people in {} know {}.", w.towns[p.town].name, p.name));
          break;
      }
    }
  }
  return join_sentences(out);
}

std::vector<int> residents(const World& w, int town) {
  std::vector<int> r;
  for (int i = 0; i < static_cast<int>(w.people.size()); ++i)
    if (w.people[i].town == town) r.push_back(i);
  return r;
}

// "A, B and C live in T." in sentences of at most six names.
void name_lists(const World& w, std::vector<int> people, const std::string& verb_phrase,
                std::vector<std::string>& out) {
  for (size_t start = 0; start < people.size(); start += 6) {
    std::vector<std::string> names;
    for (size_t k = start; k < std::min(people.size(), start + 6); ++k) names.push_back(w.people[people[k]].name);
    const bool one = names.size() == 1;
    out.push_back(fmt::format(fmt::runtime(verb_phrase), fmt::arg("names", join_and(names)),
                              fmt::arg("verb", one ? "lives" : "live"), fmt::arg("be", one ? "is" : "are")));
  }
}

std::string town_doc(const World& w, int t, bool canonical, Rng& rng) {
  const Town& town = w.towns[t];
  std::vector<std::string> out;
  static const char* const kForms[] = {"{t} is a town {f}.", "The town of {t} lies {f}.", "{t} is {f}."};
  out.push_back(fmt::format(fmt::runtime(canonical ? kForms[0] : rng.pick(kForms)), fmt::arg("t", town.name),
                            fmt::arg("f", town.feature)));
  std::vector<int> r = residents(w, t);
  if (!canonical) rng.shuffle(r);
  name_lists(w, r, "{names} {verb} in " + town.name + ".", out);
  if (!canonical) {
    for (size_t k = 0; k < std::min<size_t>(r.size(), 3); ++k) {
      const Person& p = w.people[r[k]];
      out.push_back(fmt::format("In {}, {} works as {}.", town.name, p.name, a_an(w.jobs[p.job].name)));
    }
  }
  return join_sentences(out);
}

std::string job_doc(const World& w, int j, bool canonical, Rng& rng) {
  const Job& job = w.jobs[j];
  static const char* const kPlace[] = {"{aj} works {pl}.", "Every {j} works {pl}.", "You will find {aj} at work {pl}."};
  static const char* const kTool[] = {"{aj} uses {at}.", "Every {j} needs {at}.", "The tool of {aj} is {at}."};
  auto say = [&](const char* const* forms, size_t n) {
    const char* form = canonical ? forms[0] : forms[rng.below(n)];
    return capitalize(fmt::format(fmt::runtime(form), fmt::arg("aj", a_an(job.name)), fmt::arg("j", job.name),
                                  fmt::arg("pl", job.place), fmt::arg("at", a_an(job.tool))));
  };
  std::vector<std::string> out = {say(kPlace, std::size(kPlace)), say(kTool, std::size(kTool))};
  if (!canonical && rng.chance(0.5)) std::swap(out[0], out[1]);
  std::vector<int> workers;
  for (int i = 0; i < static_cast<int>(w.people.size()); ++i)
    if (w.people[i].job == j) workers.push_back(i);
  rng.shuffle(workers);
  workers.resize(std::min<size_t>(workers.size(), canonical ? workers.size() : 4));
  for (size_t start = 0; start < workers.size(); start += 6) {
    std::vector<std::string> names;
    for (size_t k = start; k < std::min(workers.size(), start + 6); ++k) names.push_back(w.people[workers[k]].name);
    out.push_back(names.size() == 1 ? fmt::format("{} is {}.", names[0], a_an(job.name))
                                    : fmt::format("{} are {}.", join_and(names), job.plural));
  }
  return join_sentences(out);
}

std::string animal_doc(const World& w, int i, bool canonical, Rng& rng) {
  const Animal& a = w.animals[i];
  const std::string an = a_an(a.name), An = capitalize(an), Pl = capitalize(a.plural);
  auto pick = [&](std::vector<std::string> forms) { return canonical ? forms[0] : rng.pick(forms); };
  std::vector<std::string> out;
  out.push_back(pick({fmt::format("{} eat {}.", Pl, a.food), fmt::format("{} eats {}.", An, a.food),
                      fmt::format("The food of {} is {}.", an, a.food)}));
  out.push_back(pick({fmt::format("{} lives in {}.", An, a.home), fmt::format("You can find {} in {}.", an, a.home),
                      fmt::format("The home of {} is {}.", an, a.home)}));
  const std::string legs = number_word(a.legs);
  out.push_back(pick({fmt::format("{} has {} legs.", An, legs), fmt::format("{} have {} legs.", Pl, legs)}));
  if (!a.sound.empty()) {
    out.push_back(pick({fmt::format("{} says {}.", An, a.sound), fmt::format("{} say {}.", Pl, a.sound),
                        fmt::format("The sound of {} is {}.", an, a.sound)}));
  }
  if (!canonical) {
    rng.shuffle(out);
    const int n = static_cast<int>(w.animals.size());
    if (i + 1 < n) out.push_back(fmt::format("{} is smaller than {}.", An, a_an(w.animals[i + 1].name)));
    if (i > 0) out.push_back(fmt::format("{} is bigger than {}.", An, a_an(w.animals[i - 1].name)));
    if (a.pet) {
      std::vector<std::string> owners;
      for (const Person& p : w.people)
        if (&w.animals[p.pet] == &a) owners.push_back(p.name);
      rng.shuffle(owners);
      owners.resize(std::min<size_t>(owners.size(), 3));
      if (owners.size() == 1) out.push_back(fmt::format("{} has a pet {}.", owners[0], a.name));
      if (owners.size() > 1) out.push_back(fmt::format("{} each have a pet {}.", join_and(owners), a.name));
    }
  }
  return join_sentences(out);
}

// Comparisons (bigger, heavier) of (subject, object) index pairs of a list.
std::string comparison_doc(const World& w, bool animals, const std::vector<std::pair<int, int>>& pairs, bool canonical,
                           Rng& rng) {
  std::vector<std::string> out;
  for (const auto& [big, small] : pairs) {
    const std::string b = a_an(animals ? w.animals[big].name : w.things[big].name);
    const std::string s = a_an(animals ? w.animals[small].name : w.things[small].name);
    const char* more = animals ? "bigger" : "heavier";
    const char* less = animals ? "smaller" : "lighter";
    if (canonical || rng.chance(0.4)) {
      out.push_back(fmt::format("{} is {} than {}.", capitalize(b), more, s));
    } else if (rng.chance(0.6)) {
      out.push_back(fmt::format("{} is {} than {}.", capitalize(s), less, b));
    } else {
      out.push_back(animals ? fmt::format("{} is larger than {}.", capitalize(b), s)
                            : fmt::format("{} weighs more than {}.", capitalize(b), s));
    }
  }
  return join_sentences(out);
}

std::string order_doc(const World& w, bool animals) {
  std::vector<std::string> names;
  if (animals) {
    for (const Animal& a : w.animals) names.push_back(a_an(a.name));
    return fmt::format("From the smallest to the biggest, the animals are {}.", join_and(names));
  }
  for (const Thing& t : w.things) names.push_back(a_an(t.name));
  return fmt::format("From the lightest to the heaviest, the things are {}.", join_and(names));
}

std::string material_doc(const World& w, const std::vector<int>& things, bool canonical, Rng& rng) {
  std::vector<std::string> out;
  for (int i : things) {
    const Thing& t = w.things[i];
    if (canonical || rng.chance(0.4))
      out.push_back(fmt::format("{} is made of {}.", capitalize(a_an(t.name)), t.material));
    else if (rng.chance(0.5))
      out.push_back(fmt::format("Every {} is made of {}.", t.name, t.material));
    else
      out.push_back(fmt::format("The {} is a thing made of {}.", t.name, t.material));
  }
  return join_sentences(out);
}

std::vector<std::pair<int, int>> all_pairs(int n) {
  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < i; ++j) pairs.emplace_back(i, j);
  return pairs;
}

}  // namespace

std::vector<std::string> fact_documents(const World& w, size_t target_bytes, Rng& rng) {
  std::vector<std::string> docs;
  size_t bytes = 0;
  auto add = [&](std::string doc) {
    bytes += doc.size();
    docs.push_back(std::move(doc));
  };
  const int people = static_cast<int>(w.people.size()), towns = static_cast<int>(w.towns.size());
  const int jobs = static_cast<int>(w.jobs.size()), animals = static_cast<int>(w.animals.size());
  const int things = static_cast<int>(w.things.size());

  // Every canonical sentence once.
  for (int i = 0; i < people; ++i) add(person_doc(w, i, true, rng));
  for (int t = 0; t < towns; ++t) add(town_doc(w, t, true, rng));
  for (int j = 0; j < jobs; ++j) add(job_doc(w, j, true, rng));
  for (int a = 0; a < animals; ++a) add(animal_doc(w, a, true, rng));
  for (bool of_animals : {true, false}) {
    std::vector<std::pair<int, int>> pairs = all_pairs(of_animals ? animals : things);
    rng.shuffle(pairs);
    for (size_t start = 0; start < pairs.size(); start += 6) {
      std::vector<std::pair<int, int>> chunk(pairs.begin() + start, pairs.begin() + std::min(pairs.size(), start + 6));
      add(comparison_doc(w, of_animals, chunk, true, rng));
    }
    add(order_doc(w, of_animals));
  }
  std::vector<int> thing_order(things);
  for (int i = 0; i < things; ++i) thing_order[i] = i;
  rng.shuffle(thing_order);
  for (int start = 0; start < things; start += 5)
    add(material_doc(w,
                     std::vector<int>(thing_order.begin() + start, thing_order.begin() + std::min(things, start + 5)),
                     true, rng));

  // Then varied documents, weighted so that each fact is restated about as often
  // as the others: people hold most of the facts.
  const std::vector<std::pair<int, int>> animal_pairs = all_pairs(animals), thing_pairs = all_pairs(things);
  auto random_pairs = [&](const std::vector<std::pair<int, int>>& pool) {
    std::vector<std::pair<int, int>> chunk;
    for (int k = 0; k < 5; ++k) chunk.push_back(rng.pick(pool));
    return chunk;
  };
  while (bytes < target_bytes) {
    const size_t r = rng.below(100);
    if (r < 55) {
      add(person_doc(w, static_cast<int>(rng.below(people)), false, rng));
    } else if (r < 62) {
      add(town_doc(w, static_cast<int>(rng.below(towns)), false, rng));
    } else if (r < 68) {
      add(job_doc(w, static_cast<int>(rng.below(jobs)), false, rng));
    } else if (r < 80) {
      add(animal_doc(w, static_cast<int>(rng.below(animals)), false, rng));
    } else if (r < 88) {
      add(comparison_doc(w, true, random_pairs(animal_pairs), false, rng));
    } else if (r < 94) {
      add(comparison_doc(w, false, random_pairs(thing_pairs), false, rng));
    } else if (r < 98) {
      std::vector<int> some;
      for (int k = 0; k < 4; ++k) some.push_back(static_cast<int>(rng.below(things)));
      add(material_doc(w, some, false, rng));
    } else {
      add(order_doc(w, rng.chance(0.5)));
    }
  }
  return docs;
}

}  // namespace flora::synth
