#include "synth/world.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <iterator>
#include <set>

#include "util/error.h"

namespace flora::synth {

namespace {

// Smallest first. Foods, homes and sounds are the commonsense ones where there
// is one; the world only needs each animal to have exactly one of each.
const Animal kAnimals[] = {
    {"ant", "ants", "sugar", "an anthill", "", 6, false},
    {"bee", "bees", "nectar", "a hive", "buzz", 6, false},
    {"spider", "spiders", "flies", "a web", "", 8, false},
    {"mouse", "mice", "cheese", "a hole", "squeak", 4, true},
    {"frog", "frogs", "bugs", "a pond", "croak", 4, true},
    {"sparrow", "sparrows", "seeds", "a nest", "tweet", 2, false},
    {"hamster", "hamsters", "nuts", "a cage", "", 4, true},
    {"rabbit", "rabbits", "carrots", "a burrow", "", 4, true},
    {"duck", "ducks", "worms", "a pond", "quack", 2, true},
    {"hen", "hens", "corn", "a coop", "cluck", 2, true},
    {"owl", "owls", "mice", "a tree", "hoot", 2, false},
    {"cat", "cats", "fish", "a house", "meow", 4, true},
    {"fox", "foxes", "eggs", "a den", "", 4, false},
    {"dog", "dogs", "bones", "a kennel", "woof", 4, true},
    {"goat", "goats", "weeds", "a shed", "", 4, true},
    {"sheep", "sheep", "grass", "a field", "baa", 4, false},
    {"pig", "pigs", "apples", "a sty", "oink", 4, true},
    {"deer", "deer", "leaves", "a forest", "", 4, false},
    {"cow", "cows", "grass", "a barn", "moo", 4, false},
    {"horse", "horses", "hay", "a stable", "neigh", 4, true},
    {"bear", "bears", "honey", "a cave", "growl", 4, false},
    {"elephant", "elephants", "bananas", "the jungle", "", 4, false},
    {"whale", "whales", "shrimp", "the sea", "", 0, false},
};

// Lightest first.
const Thing kThings[] = {
    {"coin", "metal"},   {"key", "metal"},  {"pencil", "wood"},  {"spoon", "metal"},  {"sock", "wool"},
    {"cup", "glass"},    {"book", "paper"}, {"shoe", "leather"}, {"plate", "clay"},   {"bottle", "glass"},
    {"blanket", "wool"}, {"brick", "clay"}, {"bucket", "metal"}, {"chair", "wood"},   {"bicycle", "metal"},
    {"table", "wood"},   {"door", "wood"},  {"bed", "wood"},     {"statue", "stone"}, {"car", "metal"},
};

const Job kJobs[] = {
    {"baker", "bakers", "in a bakery", "oven"},
    {"farmer", "farmers", "on a farm", "tractor"},
    {"teacher", "teachers", "at a school", "blackboard"},
    {"doctor", "doctors", "in a hospital", "stethoscope"},
    {"cook", "cooks", "in a kitchen", "pan"},
    {"fisher", "fishers", "on a boat", "net"},
    {"builder", "builders", "on a building site", "hammer"},
    {"painter", "painters", "in a studio", "brush"},
    {"gardener", "gardeners", "in a garden", "spade"},
    {"tailor", "tailors", "in a shop", "needle"},
    {"barber", "barbers", "in a barber shop", "comb"},
    {"carpenter", "carpenters", "in a workshop", "saw"},
    {"librarian", "librarians", "in a library", "stamp"},
    {"miner", "miners", "in a mine", "pickaxe"},
};

const char* const kColours[] = {"red",  "blue",  "green", "yellow", "orange", "purple",
                                "pink", "white", "black", "brown",  "grey"};

const char* const kTownFeatures[] = {"by the river", "by the sea",  "in the hills",       "near the forest",
                                     "by a lake",    "in a valley", "near the mountains", "on an island"};
const char* const kTownPrefixes[] = {"Oak",   "Mill", "Stone", "Ash",  "Elm",  "Fox",    "Red",  "North",
                                     "South", "High", "Green", "Cold", "Wood", "Bright", "Clay", "Wolf"};
const char* const kTownSuffixes[] = {"ford", "ton", "field", "bury", "wick", "dale", "port", "ham", "by", "stead"};

// Names are an onset and an ending: 32 x 8 per gender, enough for the full scale.
const char* const kNameOnsets[] = {"Al",  "Ber", "Cal", "Dor", "Ed",  "Fen",  "Gar", "Hal", "Iv",  "Jor", "Kel",
                                   "Lin", "Mar", "Nor", "Os",  "Per", "Quin", "Ros", "Sel", "Tam", "Ul",  "Ves",
                                   "Wil", "Yor", "Zan", "Bel", "Cor", "Dan",  "Fel", "Har", "Lor", "Mel"};
const char* const kFemaleEndings[] = {"a", "ina", "ella", "ia", "ene", "ora", "ise", "ette"};
const char* const kMaleEndings[] = {"o", "an", "en", "ric", "us", "in", "el", "ard"};

}  // namespace

std::string a_an(std::string_view noun) {
  const char c = noun.empty() ? 'x' : static_cast<char>(std::tolower(static_cast<unsigned char>(noun[0])));
  const bool vowel = c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u';
  return fmt::format("{} {}", vowel ? "an" : "a", noun);
}

std::string capitalize(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s;
}

std::string number_word(int n) {
  static const char* const kWords[] = {"no",    "one",   "two",  "three", "four",   "five",  "six",
                                       "seven", "eight", "nine", "ten",   "eleven", "twelve"};
  if (n >= 0 && n <= 12) return kWords[n];
  return std::to_string(n);
}

std::string join_and(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += i + 1 == items.size() ? " and " : ", ";
    out += items[i];
  }
  return out;
}

World World::make(uint64_t seed, const WorldSize& size) {
  World w;
  w.animals.assign(std::begin(kAnimals), std::end(kAnimals));
  w.things.assign(std::begin(kThings), std::end(kThings));
  w.jobs.assign(std::begin(kJobs), std::end(kJobs));
  w.colours.assign(std::begin(kColours), std::end(kColours));

  const size_t max_towns = std::size(kTownPrefixes) * std::size(kTownSuffixes);
  const size_t max_people = std::size(kNameOnsets) * (std::size(kFemaleEndings) + std::size(kMaleEndings));
  if (size.towns < 2 || static_cast<size_t>(size.towns) > max_towns)
    fail("synth world: {} towns: expected 2 to {}", size.towns, max_towns);
  if (size.people < 2 || static_cast<size_t>(size.people) > max_people)
    fail("synth world: {} people: expected 2 to {}", size.people, max_people);

  Rng rng(seed, "world");
  std::vector<std::string> town_names;
  for (const char* p : kTownPrefixes)
    for (const char* s : kTownSuffixes) town_names.push_back(std::string(p) + s);
  rng.shuffle(town_names);
  for (int i = 0; i < size.towns; ++i) w.towns.push_back({town_names[i], rng.pick(kTownFeatures)});

  std::vector<std::pair<std::string, bool>> names;  // (name, female)
  std::set<std::string> seen;
  for (const char* onset : kNameOnsets) {
    for (const char* e : kFemaleEndings)
      if (seen.insert(std::string(onset) + e).second) names.emplace_back(std::string(onset) + e, true);
    for (const char* e : kMaleEndings)
      if (seen.insert(std::string(onset) + e).second) names.emplace_back(std::string(onset) + e, false);
  }
  rng.shuffle(names);
  std::vector<int> pets;
  for (size_t i = 0; i < w.animals.size(); ++i)
    if (w.animals[i].pet) pets.push_back(static_cast<int>(i));
  for (int i = 0; i < size.people; ++i) {
    Person p;
    p.name = names[i].first;
    p.female = names[i].second;
    p.age = static_cast<int>(rng.range(18, 80));
    p.town = static_cast<int>(rng.below(w.towns.size()));
    p.job = static_cast<int>(rng.below(w.jobs.size()));
    p.colour = static_cast<int>(rng.below(w.colours.size()));
    p.pet = rng.pick(pets);
    w.people.push_back(std::move(p));
  }
  return w;
}

std::string World::sentence(const Fact& f) const {
  switch (f.relation) {
    case Relation::kTown:
      return fmt::format("{} lives in {}.", people[f.subject].name, towns[f.object].name);
    case Relation::kJob:
      return fmt::format("{} is {}.", people[f.subject].name, a_an(jobs[f.object].name));
    case Relation::kAge:
      return fmt::format("{} is {} years old.", people[f.subject].name, f.object);
    case Relation::kColour:
      return fmt::format("{}'s favourite colour is {}.", people[f.subject].name, colours[f.object]);
    case Relation::kPet:
      return fmt::format("{} has a pet {}.", people[f.subject].name, animals[f.object].name);
    case Relation::kFood:
      return fmt::format("{} eat {}.", capitalize(animals[f.subject].plural), animals[f.subject].food);
    case Relation::kHome:
      return fmt::format("{} lives in {}.", capitalize(a_an(animals[f.subject].name)), animals[f.subject].home);
    case Relation::kLegs:
      return fmt::format("{} has {} legs.", capitalize(a_an(animals[f.subject].name)),
                         number_word(animals[f.subject].legs));
    case Relation::kSound:
      return fmt::format("{} says {}.", capitalize(a_an(animals[f.subject].name)), animals[f.subject].sound);
    case Relation::kBigger:
      return fmt::format("{} is bigger than {}.", capitalize(a_an(animals[f.subject].name)),
                         a_an(animals[f.object].name));
    case Relation::kMaterial:
      return fmt::format("{} is made of {}.", capitalize(a_an(things[f.subject].name)), things[f.subject].material);
    case Relation::kHeavier:
      return fmt::format("{} is heavier than {}.", capitalize(a_an(things[f.subject].name)),
                         a_an(things[f.object].name));
    case Relation::kWorkplace:
      return fmt::format("{} works {}.", capitalize(a_an(jobs[f.subject].name)), jobs[f.subject].place);
    case Relation::kTool:
      return fmt::format("{} uses {}.", capitalize(a_an(jobs[f.subject].name)), a_an(jobs[f.subject].tool));
    case Relation::kFeature:
      return fmt::format("{} is a town {}.", towns[f.subject].name, towns[f.subject].feature);
    case Relation::kSmaller:
    case Relation::kLighter:
      break;
  }
  fail("internal error: relation {} has no fact sentence", static_cast<int>(f.relation));
}

std::vector<Fact> World::facts() const {
  std::vector<Fact> out;
  for (size_t i = 0; i < people.size(); ++i) {
    const Person& p = people[i];
    const int s = static_cast<int>(i);
    out.push_back({Relation::kTown, s, p.town});
    out.push_back({Relation::kJob, s, p.job});
    out.push_back({Relation::kAge, s, p.age});
    out.push_back({Relation::kColour, s, p.colour});
    out.push_back({Relation::kPet, s, p.pet});
  }
  for (int i = 0; i < static_cast<int>(animals.size()); ++i) {
    out.push_back({Relation::kFood, i, i});
    out.push_back({Relation::kHome, i, i});
    out.push_back({Relation::kLegs, i, animals[i].legs});
    if (!animals[i].sound.empty()) out.push_back({Relation::kSound, i, i});
    for (int j = 0; j < i; ++j) out.push_back({Relation::kBigger, i, j});
  }
  for (int i = 0; i < static_cast<int>(things.size()); ++i) {
    out.push_back({Relation::kMaterial, i, i});
    for (int j = 0; j < i; ++j) out.push_back({Relation::kHeavier, i, j});
  }
  for (int i = 0; i < static_cast<int>(jobs.size()); ++i) {
    out.push_back({Relation::kWorkplace, i, i});
    out.push_back({Relation::kTool, i, i});
  }
  for (int i = 0; i < static_cast<int>(towns.size()); ++i) out.push_back({Relation::kFeature, i, i});
  return out;
}

std::string World::value(Relation r, int s) const {
  switch (r) {
    case Relation::kTown:
      return towns[people[s].town].name;
    case Relation::kJob:
      return jobs[people[s].job].name;
    case Relation::kAge:
      return std::to_string(people[s].age);
    case Relation::kColour:
      return colours[people[s].colour];
    case Relation::kPet:
      return a_an(animals[people[s].pet].name);
    case Relation::kFood:
      return animals[s].food;
    case Relation::kHome:
      return animals[s].home;
    case Relation::kLegs:
      return animals[s].legs == 0 ? "none" : number_word(animals[s].legs);
    case Relation::kSound:
      return animals[s].sound;
    case Relation::kMaterial:
      return things[s].material;
    case Relation::kWorkplace:
      return jobs[s].place;
    case Relation::kTool:
      return a_an(jobs[s].tool);
    case Relation::kFeature:
      return towns[s].feature;
    case Relation::kBigger:
    case Relation::kSmaller:
    case Relation::kHeavier:
    case Relation::kLighter:
      break;
  }
  fail("internal error: relation {} has no single value", static_cast<int>(r));
}

std::vector<std::string> World::values(Relation r) const {
  std::vector<std::string> out;
  auto add = [&](const std::string& v) {
    if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
  };
  switch (r) {
    case Relation::kTown:
      for (const Town& t : towns) add(t.name);
      break;
    case Relation::kJob:
      for (const Job& j : jobs) add(j.name);
      break;
    case Relation::kColour:
      for (const auto& c : colours) add(c);
      break;
    case Relation::kPet:
      for (const Animal& a : animals)
        if (a.pet) add(a_an(a.name));
      break;
    case Relation::kFood:
    case Relation::kHome:
    case Relation::kLegs:
    case Relation::kSound:
      for (int i = 0; i < static_cast<int>(animals.size()); ++i)
        if (r != Relation::kSound || !animals[i].sound.empty()) add(value(r, i));
      break;
    case Relation::kMaterial:
      for (int i = 0; i < static_cast<int>(things.size()); ++i) add(value(r, i));
      break;
    case Relation::kWorkplace:
    case Relation::kTool:
      for (int i = 0; i < static_cast<int>(jobs.size()); ++i) add(value(r, i));
      break;
    case Relation::kFeature:
      for (const char* f : kTownFeatures) add(f);
      break;
    default:
      fail("internal error: relation {} has no value list", static_cast<int>(r));
  }
  return out;
}

}  // namespace flora::synth
